"""Generate the Python code for protos/staycheck/v1/*.proto (``make proto``).

Generated code is committed. ``python protos/generate.py --check`` regenerates into a
temporary directory and exits 1 when the committed files differ (a test runs it).

protoc writes ``from staycheck.v1 import x_pb2``; our import packages are ``geo`` and
``client``, so the imports are rewritten to relative ones. The bundle messages go to
``geo/_pb`` (the pure core needs them); the service messages and stubs go to ``client/_pb``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DESTINATIONS = {
    "bundle": ROOT / "geo" / "_pb",
    "verification": ROOT / "client" / "_pb",
    "partner": ROOT / "client" / "_pb",
}
INIT = '"""Generated protobuf code: do not edit; run ``make proto``."""\n'


def _generate(out: pathlib.Path) -> dict[pathlib.Path, str]:
    from grpc_tools import protoc  # dev dependency, imported only here

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.glob("staycheck/v1/*.proto"))
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
    files: dict[pathlib.Path, str] = {}
    for stem, dest in DESTINATIONS.items():
        files[dest / "__init__.py"] = INIT
        for path in sorted((out / "staycheck" / "v1").glob(f"{stem}_pb2*")):
            if stem == "bundle" and "_grpc" in path.name:
                continue  # no service there, and geo/ must not import grpc
            text = path.read_text()
            text = re.sub(r"^from staycheck\.v1 import ", "from . import ", text, flags=re.M)
            text = re.sub(
                r"^import staycheck\.v1\.(\w+) as ", r"from . import \1 as ", text, flags=re.M
            )
            files[dest / path.name] = text
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = _generate(pathlib.Path(tmp))
    if args.check:
        stale = []
        for path, text in files.items():
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        for dest in DESTINATIONS.values():
            for path in dest.glob("*_pb2*"):
                if path not in files:
                    stale.append(f"{path.relative_to(ROOT)} (not generated)")
        if stale:
            print("generated code is stale, run `make proto`: " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    for dest in DESTINATIONS.values():
        for path in dest.glob("*_pb2*"):
            path.unlink()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
