"""Generate the Python code for protos/staycheck/v1/*.proto (``make proto``).

Generated code is committed beside the ``.proto`` files, in ``protos/staycheck/v1/``, and
installs as ``staycheck.v1``: the package path protoc itself writes
(``from staycheck.v1 import bundle_pb2``), so no import is rewritten.
``python protos/generate.py --check`` regenerates into a temporary directory and exits 1
when the committed files differ (a test runs it).

``bundle.proto`` holds no service, so no ``bundle_pb2_grpc`` is kept: the pure core imports
the bundle messages and must not pull in grpc.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DEST = PROTO_ROOT / "staycheck" / "v1"
INIT = '"""Generated protobuf code for ``staycheck.v1``: do not edit; run ``make proto``."""\n'
# Generated files that are not kept (a service-less proto's empty gRPC module).
UNUSED = {"bundle_pb2_grpc.py", "bundle_pb2_grpc.pyi"}


def _generate(out: pathlib.Path) -> dict[pathlib.Path, str]:
    from grpc_tools import protoc  # dev dependency, imported only here

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in DEST.glob("*.proto"))
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    # The mypy plugins are console scripts installed beside this interpreter.
    bindir = str(pathlib.Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    files: dict[pathlib.Path, str] = {DEST / "__init__.py": INIT}
    for path in sorted((out / "staycheck" / "v1").glob("*_pb2*")):
        if path.name not in UNUSED:
            files[DEST / path.name] = path.read_text()
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = _generate(pathlib.Path(tmp))
    if args.check:
        stale = [
            str(path.relative_to(ROOT))
            for path, text in files.items()
            if not path.exists() or path.read_text() != text
        ]
        stale += [
            f"{path.relative_to(ROOT)} (not generated)"
            for path in DEST.glob("*_pb2*")
            if path not in files
        ]
        if stale:
            print("generated code is stale, run `make proto`: " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    for path in DEST.glob("*_pb2*"):
        path.unlink()
    for path, text in files.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
