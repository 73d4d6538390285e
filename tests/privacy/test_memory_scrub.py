"""Freed request buffers (issue 13, finding 6): right after 500 canary requests, an outside
scan found the coordinates of 221 of them in the server's memory (raw protobuf bytes in
freed receive buffers). Nothing reached disk, logs or the network, but a core dump or a
memory-reading attacker would see them. ``staycheck serve --scrub-freed-memory`` has freed
memory overwritten (glibc's ``malloc.perturb`` with its per-thread cache off, Python's
allocator on malloc).

Both tests run a real ``staycheck serve``, send 1 000 itineraries each with a latitude no
other test uses, then one more with another latitude (the last request's buffer is still in
use by gRPC), and read the server's anonymous memory through ``/proc/PID/mem``.
"""

from __future__ import annotations

import pathlib
import random
import time

from staycheck.client import StayCheckClient

from tests.harness import serve_process
from tests.helpers import BJ_LON, DAY, HOUR, itinerary, spec_areas, stay
from tests.privacy.serving import doubles_in_memory

REQUESTS = 1000


def _canaries(seed: int) -> list[float]:
    """Latitudes in Beijing's range, random to the last bit: no other code makes them."""
    rnd = random.Random(seed)
    return [39.5 + rnd.random() * 0.5 for _ in range(REQUESTS)]


def _found_after_requests(root: pathlib.Path, *extra_args: str) -> set[float]:
    now = int(time.time())
    canaries = _canaries(seed=len(extra_args))
    arrival = now - 3 * DAY
    with serve_process(
        root, areas=spec_areas(now=now), log_level="warning", extra_args=extra_args
    ) as srv:
        with StayCheckClient(srv.target) as client:
            for lat in [*canaries, 39.9042]:
                trip = itinerary(stay("110100", arrival, arrival + 6 * HOUR, (lat, BJ_LON)))
                client.submit(trip)
        environ = pathlib.Path(f"/proc/{srv.pid}/environ").read_bytes().split(b"\0")
        scrubbing = b"PYTHONMALLOC=malloc" in environ
        assert scrubbing == bool(extra_args), "the server runs with the environment asked for"
        return doubles_in_memory(srv.pid, canaries)


def test_with_scrubbing_freed_request_buffers_keep_no_itinerary(tmp_path):
    found = _found_after_requests(tmp_path, "--scrub-freed-memory")
    assert found == set(), f"{len(found)} of {REQUESTS} canary latitudes still in memory"


def test_without_scrubbing_freed_buffers_still_hold_itineraries(tmp_path):
    """What remains by default, and what the option is for: if this ever finds nothing, the
    option's description in the README and docs/rules.md must change."""
    found = _found_after_requests(tmp_path)
    assert len(found) > REQUESTS // 20, len(found)
