"""Helper processes (pool workers, the Manager, a local Dask cluster) started shielded
from stop signals.

Ctrl-C in a terminal and a service manager's SIGTERM reach the whole process group, and
stopping is the main process's decision: it lets tasks in flight finish, then ends what
is left. A helper that took the signal itself would die mid-task, or (a Dask worker's
event loop) wedge the futures that wait on it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import signal
import threading
from collections.abc import Iterator


def get_context(start_method: str) -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context(None if start_method == "auto" else start_method)


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread; threads it starts meanwhile inherit the
    mask, so a stop signal is only ever taken by the main thread's handlers. Signals sent
    meanwhile stay pending and are delivered when the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def helpers_shielded(context: multiprocessing.context.BaseContext) -> Iterator[None]:
    """Start helper processes (workers, the fork server, the Manager) shielded from stop
    signals from their first instruction: they inherit "ignore" (also across the exec of
    spawn and of the fork server, which resets the signal mask), so Ctrl-C or a service
    manager's SIGTERM to the whole group never kills one that has not yet run its
    initializer. This process blocks the signals meanwhile (blocked signals are queued
    even while ignored), restores its handlers, then takes what arrived."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if context.get_start_method() != "fork":
        # Started on first use, the resource tracker unblocks SIGINT/SIGTERM when done
        # (multiprocessing.resource_tracker): start it now, before anything is blocked.
        multiprocessing.resource_tracker.ensure_running()
    with stop_signals_blocked():
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def start_forkserver(preload: list[str]) -> bool:
    """Start this process's fork server now, shielded, importing ``preload`` in it: the
    processes it forks later start at once, with those modules loaded, and ignore stop
    signals (it restores, in each child, the handlers it was started with). Its children
    inherit nothing of this process, unlike children forked from it directly, which would
    keep each other's "parent alive" pipes open. False where there is no fork server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preload)
    with helpers_shielded(context):
        multiprocessing.forkserver.ensure_running()
    return True
