"""What the commands that call a server share: failing at once, with what to do, when the
server cannot be reached, and turning a refused call into a message and an exit code.

Needs the ``client`` extra (grpc).
"""

from __future__ import annotations

from typing import Any, NoReturn

from staycheck.cli.common import EXIT_REFUSED, EXIT_USAGE, fail


def rpc_failed(e: Any) -> NoReturn:
    """A failed call: an input the server refused (INVALID_ARGUMENT) is an input error,
    exit 2, as when the command line catches it; anything else is a refusal, exit 1."""
    code = e.code()
    fail(
        f"server refused: {code.name}: {e.details()}",
        EXIT_USAGE if code.name == "INVALID_ARGUMENT" else EXIT_REFUSED,
    )


def oblivious_failed(e: Any) -> NoReturn:
    """:func:`rpc_failed` for a call through Oblivious HTTP (the same codes, the same
    details: the gateway passes them on inside the encrypted answer)."""
    if e.http_status is None or e.code.name != "UNAVAILABLE":
        fail(
            f"server refused: {e.code.name}: {e.details}",
            EXIT_USAGE if e.code.name == "INVALID_ARGUMENT" else EXIT_REFUSED,
        )
    fail(f"submit --oblivious: {e.details}", EXIT_REFUSED)


def reachable(target: str, channel: Any, *, tls: bool, timeout_s: float = 2.0) -> None:
    """Fail at once, with what to do, when ``target`` cannot take calls on ``channel``:
    nothing listens there, or it speaks the other of TLS and plaintext."""
    import socket

    import grpc

    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
        return
    except grpc.FutureTimeoutError:
        pass
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError:
        fail(f"nothing is listening at {target}", EXIT_REFUSED)
    if tls:
        fail(
            f"{target} does not answer as a TLS gRPC server (a plaintext server? drop --ca; "
            "or a wrong CA?)",
            EXIT_REFUSED,
        )
    fail(f"{target} does not answer plaintext gRPC (a TLS server? add --ca PEM)", EXIT_REFUSED)
