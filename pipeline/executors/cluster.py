"""The dask executor's connection to a cluster: a scheduler at an address, or a
``LocalCluster`` started for the run. Everything the executor asks of
``dask.distributed`` goes through here; the executor's loop (``executors.dask``) only sees
worker addresses, task keys and a queue of events.

Events put on ``events`` (from the client's threads: a put can neither block nor raise):
``("done", key)`` when a task's future is finished, erred or cancelled; ``("start",
message)`` when a task of this run announces its start; ``("removed", address)`` and
``("added", address)`` as workers leave and join.

A local cluster is started shielded from stop signals: its event loop thread, which
spawns (and, after a crash, respawns) the worker processes, blocks SIGINT and SIGTERM, so
every worker inherits the block and a Ctrl-C to the process group reaches only the main
process, which decides. Its workers end when this process does, even by ``kill -9``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import logging
import os
import pickle
import queue
import re
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import dask.config
import distributed
from distributed import Client, LocalCluster

from pipeline import __version__, remote
from pipeline.bundle import Bundle
from pipeline.errors import ClusterError, ExecutionError
from pipeline.executors.base import describe_exit
from pipeline.executors.shield import STOP_SIGNALS, stop_signals_blocked

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0  # an unreachable scheduler: a usage error within seconds
CALL_TIMEOUT_S = 30.0  # a question to the scheduler or the workers
CLOSE_TIMEOUT_S = 5.0
DEATH_NOTE_TIMEOUT_S = 1.0
FETCH_POLL_S = 0.1
TLS_SETTINGS = (
    "distributed.comm.tls.ca-file",
    "distributed.comm.tls.client.cert",
    "distributed.comm.tls.client.key",
)
DASK_LOGGERS = ("distributed", "tornado", "asyncio", "bokeh")
_DEATH = re.compile(r"Worker process (\d+) (was killed by signal (\d+)|exited with status (-?\d+))")


@dataclass(frozen=True)
class WorkerInfo:
    address: str
    nthreads: int
    host: str
    nanny: str | None


class _Lost(Exception):
    """A finished task's result can no longer be fetched."""


def quiet_dask_logs(debug: bool) -> None:
    """dask.distributed logs to stderr in its own format, tracebacks included, about
    events this run reports itself (a worker's death, a closed connection at shutdown):
    its console handlers go, and its records reach this process's handlers only with
    ``--debug``. Its own in-memory logs (the nannies' and workers' of a local cluster,
    which say how a worker process ended) still get them."""
    names = [
        name for name in list(logging.root.manager.loggerDict) if name.split(".")[0] in DASK_LOGGERS
    ]
    for name in {*DASK_LOGGERS, *names}:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler):  # the console, a file
                logger.removeHandler(handler)
        top = name in DASK_LOGGERS
        logger.propagate = debug or not top
        # Children that dask's config gave a level of their own keep it unless reset.
        logger.setLevel(logging.INFO if top else logging.NOTSET)
        if top and not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            # A logger with no handler that does not propagate falls back on logging's
            # last resort, which prints warnings and tracebacks to stderr after all.
            logger.addHandler(logging.NullHandler())


def local_cluster_config(dashboard: str | None, start_method: str) -> dict[str, Any]:
    """Dask settings for the life of a local cluster (restarted workers included): how its
    worker processes start (``executors.dask``: forked by a fork server that has dask
    loaded already), and dask's background work that has nothing to do here, off — its
    sampling profiler (a stack walk every 10 ms in each worker: a few percent of job A,
    for a profile only the dashboard shows), work stealing (tasks are pinned), the 20 ms
    health tick of every event loop, and, without a dashboard, the web routes."""
    config: dict[str, Any] = {
        "distributed.worker.multiprocessing-method": start_method,
        "distributed.worker.profile.enabled": dashboard is not None,
        "distributed.scheduler.work-stealing": False,
        "distributed.admin.tick.interval": "500ms",
    }
    if dashboard is None:  # no web server's routes at all (health, metrics), not just no dashboard
        config["distributed.scheduler.http.routes"] = []
        config["distributed.worker.http.routes"] = []
    return config


def env_name(setting: str) -> str:
    """The environment variable that sets a dask config key."""
    return "DASK_" + setting.upper().replace(".", "__").replace("-", "_")


def check_tls(address: str) -> None:
    if not address.startswith("tls://"):
        return
    missing = [key for key in TLS_SETTINGS if not dask.config.get(key, None)]
    if missing:
        raise ClusterError(
            f"execution.address {address} needs TLS credentials, and dask's config has no "
            f"{', '.join(missing)}: set them in a dask config file or with "
            f"{', '.join(env_name(key) for key in missing)}"
        )


class Cluster:
    """One run's client of a Dask cluster (see the module docstring)."""

    def __init__(
        self,
        address: str | None,
        workers: int,
        debug: bool = False,
        dashboard: str | None = None,
        start_method: str | None = None,
    ) -> None:
        self.address = address
        self.n_local = workers
        self.debug = debug
        self.dashboard = dashboard
        self.start_method = start_method or "spawn"  # a local cluster's worker processes
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.client: Client | None = None
        self.local: LocalCluster | None = None
        self._futures: dict[str, distributed.Future] = {}
        self._subscribed: list[str] = []
        self._local_config: Any = None  # dask.config.set for a local cluster's life

    # --- starting ----------------------------------------------------------------------

    def connect(self) -> None:
        """Reach the scheduler (``ClusterError``: exit 2) or start a local cluster."""
        quiet_dask_logs(self.debug)
        if self.address is None:
            self._start_local()
        else:
            self._connect_remote(self.address)
        for topic, handler in ((remote.START_TOPIC, self._on_start), ("all", self._on_cluster)):
            self.client.subscribe_topic(topic, handler)
            self._subscribed.append(topic)

    def _connect_remote(self, address: str) -> None:
        check_tls(address)
        try:
            self.client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except TypeError as exc:  # dask's way of saying "no TLS context"
            raise ClusterError(f"cannot connect to {address}: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {address} within {CONNECT_TIMEOUT_S:g}s: {exc}"
            ) from exc
        self._check_versions()

    def _start_local(self) -> None:
        level = logging.WARNING if self.debug else logging.CRITICAL
        dashboard = self.dashboard
        if dashboard is not None and importlib.util.find_spec("bokeh") is None:
            log.warning("no dashboard: it needs bokeh (pip install 'bokeh>=3.1')")
            dashboard = None
        with stop_signals_blocked():  # the cluster's loop thread keeps the block
            previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
            try:
                config = local_cluster_config(dashboard, self.start_method)
                self._local_config = dask.config.set(config)
                self.local = LocalCluster(
                    n_workers=self.n_local,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=dashboard,
                    silence_logs=level,
                    host="127.0.0.1",
                    # Without a dashboard the scheduler still listens for HTTP, by default
                    # on port 8787 (and warns when another cluster has it): any free port.
                    scheduler_kwargs={} if dashboard else {"dashboard_address": "127.0.0.1:0"},
                )
                self.client = Client(self.local, set_as_default=False, direct_to_workers=True)
            except Exception as exc:
                raise ExecutionError(f"cannot start a local Dask cluster: {exc}") from exc
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
        if dashboard is not None:
            log.info("Dask dashboard: %s", self.local.dashboard_link)

    def _check_versions(self) -> None:
        """Every worker must run this pipeline version (the batch's code and the results'
        shape are the client's): exit 2 naming those that do not."""
        probe = pickle.dumps(remote.RemoteCall(remote.version, ()))
        assert self.client is not None
        try:
            answers = self.client.run(
                pickle.loads, probe, on_error="return", callback_timeout=CALL_TIMEOUT_S
            )
        except Exception as exc:
            raise ClusterError(f"cannot ask the Dask workers for their versions: {exc}") from exc
        wrong = []
        for address, answer in sorted(answers.items()):
            if isinstance(answer, ModuleNotFoundError):
                wrong.append(f"{address} has no pipeline package")
            elif isinstance(answer, BaseException):
                wrong.append(f"{address} cannot load pipeline ({type(answer).__name__}: {answer})")
            elif answer != __version__:
                wrong.append(f"{address} has pipeline {answer}")
        if wrong:
            raise ClusterError(
                f"Dask workers must run pipeline {__version__}, as this client does: "
                + "; ".join(wrong)
            )

    def install(self, modules: Bundle, name: str) -> None:
        """Register the plugin that installs ``modules`` on every worker, present and
        future, under a name that a later run of the same job replaces."""
        assert self.client is not None
        try:
            replies = self.client.register_plugin(remote.BundleInstaller(modules, name), name=name)
        except Exception as exc:
            raise ExecutionError(f"cannot install the plugin modules on the workers: {exc}") from (
                exc
            )
        for address, reply in (replies or {}).items():
            if isinstance(reply, dict) and reply.get("status") == "error":
                raise ExecutionError(
                    f"cannot install the plugin modules on the Dask worker {address}: "
                    f"{reply.get('exception_text') or reply}"
                )

    def uninstall(self, name: str) -> None:
        if self.client is not None and self.local is None:
            with contextlib.suppress(Exception):
                self.client.unregister_worker_plugin(name)

    # --- the event handlers (client threads: put only) ---------------------------------

    def _on_start(self, event: tuple[float, Any]) -> None:
        self.events.put(("start", event[1]))

    def _on_cluster(self, event: tuple[float, Any]) -> None:
        message = event[1]
        if not isinstance(message, dict):
            return
        action = message.get("action")
        if action == "remove-worker":
            self.events.put(("removed", message.get("worker")))
        elif action == "add-worker":
            self.events.put(("added", message.get("worker")))

    def _on_done(self, future: distributed.Future) -> None:
        self.events.put(("done", future.key))

    # --- tasks -------------------------------------------------------------------------

    def workers(self) -> dict[str, WorkerInfo]:
        assert self.client is not None
        info = self.client.scheduler_info(n_workers=-1)
        found = {}
        for address, entry in info.get("workers", {}).items():
            host = entry.get("host") or address.split("://")[-1].rsplit(":", 1)[0]
            found[address] = WorkerInfo(
                address,
                int(entry.get("nthreads") or 1),
                host,
                entry.get("nanny"),
            )
        return found

    def submit(self, key: str, payload: bytes, address: str) -> None:
        """Run ``pickle.loads(payload)`` on the worker at ``address`` and nowhere else:
        if that worker dies, the task waits for the executor to decide, instead of being
        rerun elsewhere behind its back."""
        assert self.client is not None
        future = self.client.submit(
            pickle.loads,
            payload,
            key=key,
            workers=[address],
            allow_other_workers=False,
            pure=False,
        )
        self._futures[key] = future
        future.add_done_callback(self._on_done)

    def outcome(self, key: str) -> tuple[str, Any]:
        """A done task's status and its value (``finished``), exception (``error``) or
        nothing (``cancelled``; ``lost``: its result went with its worker before it could
        be fetched). The task is forgotten."""
        future = self._futures.pop(key, None)
        if future is None:
            return "cancelled", None
        try:
            if future.status == "finished":
                return "finished", self._fetch(future)
            if future.status == "error":
                return "error", future.exception(timeout=CALL_TIMEOUT_S)
            return ("cancelled" if future.status == "cancelled" else "lost"), None
        except _Lost:
            return "lost", None
        except Exception as exc:
            return "error", exc
        finally:
            future.release()

    def _fetch(self, future: distributed.Future) -> Any:
        """The result, fetched once (a result of tens of megabytes takes a while): polled,
        never restarted — a ``Future.result(timeout)`` that times out cancels the transfer.
        ``_Lost`` as soon as its worker is found gone (the client then resets the future
        to wait for a rerun, which a pinned task never gets)."""
        assert self.client is not None
        fetching = asyncio.run_coroutine_threadsafe(
            self.client.gather(future, asynchronous=True), self.client.loop.asyncio_loop
        )
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            try:
                return fetching.result(timeout=FETCH_POLL_S)
            except concurrent.futures.TimeoutError:
                if future.status != "finished" or time.monotonic() > deadline:
                    fetching.cancel()
                    raise _Lost from None

    def cancel(self, keys: list[str]) -> None:
        futures = [f for key in keys if (f := self._futures.pop(key, None)) is not None]
        if futures and self.client is not None and self.healthy():
            with contextlib.suppress(Exception):
                self.client.cancel(futures, force=True)
        for future in futures:
            future.release()

    def stop_worker(self, address: str) -> None:
        """End the worker process at ``address`` (its nanny starts a fresh one)."""
        assert self.client is not None
        with contextlib.suppress(Exception):
            self.client.run(remote.stop_worker, workers=[address], wait=False)

    def restart_worker(self, address: str) -> None:
        """The harder way, through the worker's nanny, for a worker whose event loop no
        longer answers: in a thread of its own (it can take seconds)."""

        def restart() -> None:
            assert self.client is not None
            with contextlib.suppress(Exception):
                self.client.restart_workers([address], timeout=CALL_TIMEOUT_S)

        with stop_signals_blocked():
            threading.Thread(target=restart, name="restart-worker", daemon=True).start()

    def death_note(self, worker: WorkerInfo | None, pid: int | None) -> str | None:
        """How worker process ``pid`` ended ("was killed by SIGKILL"), from the log of its
        nanny, asked through the worker it has started since (the scheduler reaches a
        nanny only through a live worker); None when that cannot be known in time."""
        if worker is None or worker.nanny is None or pid is None or self.client is None:
            return None
        deadline = time.monotonic() + DEATH_NOTE_TIMEOUT_S
        while True:
            with contextlib.suppress(Exception):
                note = self._death_note(worker.nanny, pid)
                if note is not None:
                    return note
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def _death_note(self, nanny: str, pid: int) -> str | None:
        assert self.client is not None
        successor = next((w for w in self.workers().values() if w.nanny == nanny), None)
        if successor is None:
            return None
        logs = self.client.sync(
            self.client.scheduler.worker_logs,
            n=200,
            workers=[successor.address],
            nanny=True,
            callback_timeout=DEATH_NOTE_TIMEOUT_S,
        )
        for lines in (logs or {}).values():
            for _level, text in reversed(lines):
                match = _DEATH.search(text)
                if match and int(match[1]) == pid:
                    code = -int(match[3]) if match[3] is not None else int(match[4])
                    return describe_exit(code)
        return None

    def healthy(self) -> bool:
        return self.client is not None and self.client.status == "running"

    # --- the end -------------------------------------------------------------------------

    def close(self, busy: bool = False) -> None:
        """Cancel what is left, disconnect, and stop a local cluster (its busy workers
        killed first, which is much faster than a graceful close)."""
        client, local = self.client, self.local
        self.client = self.local = None
        if client is not None:
            if client.status == "running":
                for topic in self._subscribed:
                    with contextlib.suppress(Exception):
                        client.unsubscribe_topic(topic)
                if self._futures:
                    with contextlib.suppress(Exception):
                        client.cancel(list(self._futures.values()), force=True)
            self._futures.clear()
            with contextlib.suppress(Exception):
                client.close(timeout=CLOSE_TIMEOUT_S)
        if local is not None:
            if busy:
                for pid in _local_worker_pids(local):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                local.close(timeout=CLOSE_TIMEOUT_S)
        if self._local_config is not None:
            self._local_config.__exit__(None, None, None)
            self._local_config = None


def _local_worker_pids(local: LocalCluster) -> list[int]:
    pids = []
    for nanny in list(local.workers.values()):
        process = getattr(getattr(nanny, "process", None), "process", None)
        pid = getattr(process, "pid", None)
        if pid:
            pids.append(pid)
    return pids
