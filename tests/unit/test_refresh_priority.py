"""The refresh runs beside calls without taking their CPU (``staycheck.server.bundles``):
its thread is niced, and the interpreter's switch interval is short while it runs and put
back after, also when two refreshes (two servers in one process) overlap."""

from __future__ import annotations

import os
import sys
import threading

import pytest
from staycheck.server import bundles


def test_the_refresh_thread_is_nicer_than_the_one_that_made_it():
    seen: list[int] = []

    def work() -> None:
        bundles.lower_thread_priority()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [min(mine + bundles.BACKGROUND_NICE, 19)]
    # Only that thread: this one keeps its priority.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


def test_overlapping_refreshes_put_the_switch_interval_back_once_both_ended():
    before = sys.getswitchinterval()
    first_inside, first_may_end = threading.Event(), threading.Event()
    during: list[float] = []

    def first() -> None:
        first_inside.set()
        first_may_end.wait(10)
        during.append(sys.getswitchinterval())

    def second() -> None:
        during.append(sys.getswitchinterval())

    a = threading.Thread(target=bundles._quietly, args=(first,))
    a.start()
    assert first_inside.wait(10)
    b = threading.Thread(target=bundles._quietly, args=(second,))
    b.start()
    b.join()
    # The second ended while the first still runs: the interval stays short.
    assert sys.getswitchinterval() == bundles.REFRESH_SWITCH_INTERVAL_S
    first_may_end.set()
    a.join()
    assert during == [bundles.REFRESH_SWITCH_INTERVAL_S] * 2
    assert sys.getswitchinterval() == before


def test_the_switch_interval_is_put_back_when_the_refresh_fails():
    before = sys.getswitchinterval()

    def fails() -> None:
        raise RuntimeError("the repository said no")

    with pytest.raises(RuntimeError):
        bundles._quietly(fails)
    assert sys.getswitchinterval() == before
