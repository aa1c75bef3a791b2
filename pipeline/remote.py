"""What runs on a Dask worker: the plugin that installs the config folder's modules, and
the task that runs one batch through ``worker.execute``.

Nothing here may run on the scheduler, which need not have this package (nor the user's
modules): a task is submitted as ``pickle.loads(payload)``, a stdlib function and bytes,
and the payload's ``RemoteCall.__reduce__`` names ``run_remote``, so only a worker,
unpickling it, imports this module and runs the batch. What comes back is bytes too
(the results pickled, the part's records), so the scheduler can pass it on untouched.

A task announces its start to the client before it touches any input: on a remote
cluster, an event the scheduler relays, sent and acknowledged before the batch starts;
on a local cluster, a record written in a folder of the client's, which it reads.
A worker that dies right after is known to have been running that batch, which is
charged an attempt, while batches only queued on it go round again for free.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import pickle
import re
import shutil
import socket
import sys
import time
import zlib
from typing import Any

from distributed import WorkerPlugin, get_worker
from distributed.utils import sync

from pipeline import __version__, bundle, worker
from pipeline.heap import keep_freed_heap
from pipeline.models import EACH_TASK_ANNOUNCED_UP_TO, Batch, JobSpec

log = logging.getLogger(__name__)

# One topic for every run (the scheduler keeps each topic's events): runs tell theirs apart.
START_TOPIC = "pipeline-task-start"
PLUGINS_DIR = "pipeline-plugins"  # under the worker's local directory
ANNOUNCE_TIMEOUT_S = 10.0
ZSTD_LEVEL = 1
ZLIB_LEVEL = 1


def announces_each_task(batch: Batch) -> bool:
    return 1 < len(batch.tasks) <= EACH_TASK_ANNOUNCED_UP_TO


class BundleInstaller(WorkerPlugin):
    """Installs a job's plugin modules on every worker, including one that joins or is
    restarted later (the scheduler runs registered plugins on each new worker)."""

    def __init__(self, modules: bundle.Bundle, name: str) -> None:
        self.modules = modules
        self.name = name
        self.directory: str | None = None

    def setup(self, worker: Any) -> None:
        root = os.path.join(worker.local_directory, PLUGINS_DIR)
        self.directory = bundle.install(self.modules, root, self.name)
        # What a Pool worker inherits: the allocator keeps freed blocks for the next one,
        # and the objects alive now (dask's own, some 70,000) leave the collector's sight,
        # or every full collection walks them: a fifth off each batch of job A.
        keep_freed_heap()
        gc.freeze()

    def teardown(self, worker: Any) -> None:
        if self.directory is not None:
            bundle.forget_bundle(self.directory)
            shutil.rmtree(self.directory, ignore_errors=True)


class RemoteCall:
    """A call that happens when it is unpickled: ``pickle.loads(dumps(RemoteCall(f,
    args)))`` is ``f(*args)``. Only the worker that unpickles it needs ``f``'s module."""

    def __init__(self, function: Any, args: tuple[Any, ...]) -> None:
        self.function = function
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.function, self.args


def version() -> str:
    """This worker's pipeline version (the client refuses workers of another)."""
    return __version__


@dataclasses.dataclass(frozen=True)
class TaskHeader:
    """What the client needs to know of a finished task besides its results."""

    pid: int
    host: str
    codec: str | None  # how the part's bytes are compressed


def run_remote(
    run: str,
    key: str,
    plugin: str,
    job: JobSpec,
    batch: Batch,
    codecs: tuple[str, ...],
    client_version: str,
    starts_dir: str | None,
) -> tuple[bytes, bytes | None]:
    """One batch on this worker: (pickled (BatchOutput without its part, TaskHeader),
    the part's records, compressed with the first of ``codecs`` this worker has).
    ``starts_dir``: the client is on this machine and reads the starts from there."""
    dask_worker = get_worker()
    host = socket.gethostname()
    message = {"run": run, "key": key, "pid": os.getpid(), "host": host}
    if starts_dir is not None:
        path = start_file(starts_dir, dask_worker.address)

        def announce_start(message: dict[str, Any]) -> None:
            _announce_locally(path, message)
    else:

        def announce_start(message: dict[str, Any]) -> None:
            _announce(dask_worker, message)

    announce_start({**message, "task": 0})
    installer = dask_worker.plugins.get(plugin)
    folder = getattr(installer, "directory", None)
    if client_version != __version__:  # a worker that joined after the client's check
        output = worker.failed_output(
            batch,
            f"the Dask worker {dask_worker.address} runs pipeline {__version__}, "
            f"the client {client_version}",
        )
    elif folder is None:
        output = worker.failed_output(
            batch, "the config folder's modules are not installed on this Dask worker"
        )
    else:
        if folder not in sys.path:  # a new bundle here: its job is compiled afresh
            bundle.forget_other_bundles(os.path.dirname(folder), folder)
        job = dataclasses.replace(job, import_dirs=(folder,))
        announce = None
        if announces_each_task(batch):

            def announce(index: int) -> None:
                if index:
                    announce_start({**message, "task": index})

        output = worker.execute(job, batch, announce)
    codec, part = _compress(output.part, codecs)
    header = TaskHeader(os.getpid(), host, codec)
    meta = pickle.dumps((output._replace(part=None), header), protocol=pickle.HIGHEST_PROTOCOL)
    return meta, part


def _announce(dask_worker: Any, message: dict[str, Any]) -> None:
    """Tell the client (through the scheduler) that this task starts, and wait until the
    scheduler has it: an event sent on the worker's batched stream could be lost with a
    worker that dies a moment later."""
    message["t"] = time.time()
    try:
        sync(
            dask_worker.loop,
            dask_worker.scheduler.log_event,
            topic=START_TOPIC,
            msg=message,
            callback_timeout=ANNOUNCE_TIMEOUT_S,
        )
    except Exception as exc:  # the client then knows less; the batch still runs
        log.warning("cannot announce the start of %s: %s", message["key"], exc)


def start_file(folder: str, address: str) -> str:
    """Where the worker at ``address`` writes its starts, in the client's folder."""
    return os.path.join(folder, re.sub(r"[^A-Za-z0-9._-]", "_", address))


def _announce_locally(path: str, message: dict[str, Any]) -> None:
    """The start, as a Pool worker announces its own (``worker.write_announcement``), for
    a client on this machine to read when it needs to: no message, no wait. Written before
    the task runs, it names it after a crash. The file is in a folder of the client's, not
    the worker's (the nanny's next worker purges a dead one's folder)."""
    fields = (message[name] for name in ("run", "key", "task", "pid", "host"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        worker.write_announcement(fd, fields)
    finally:
        os.close(fd)


def read_local_start(path: str) -> dict[str, Any] | None:
    """The last start a local worker wrote (``_announce_locally``), or None."""
    fields = worker.read_announcement_fields(path)
    if fields is None or len(fields) != 5 or not fields[2].isdigit() or not fields[3].isdigit():
        return None
    run, key, task, pid, host = fields
    return {"run": run, "key": key, "task": int(task), "pid": int(pid), "host": host}


def _compress(part: bytes | None, codecs: tuple[str, ...]) -> tuple[str | None, bytes | None]:
    if not part:
        return None, part
    for codec in codecs:
        if codec == "zstd":
            try:
                import zstandard
            except ImportError:
                continue
            return codec, zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(part)
        if codec == "zlib":
            return codec, zlib.compress(part, ZLIB_LEVEL)
    return None, part


def decompress(codec: str | None, data: bytes) -> bytes:
    """The client's side of ``_compress``."""
    if codec is None:
        return data
    if codec == "zlib":
        return zlib.decompress(data)
    import zstandard

    return zstandard.ZstdDecompressor().decompress(data)


async def stop_worker() -> None:
    """Run on a worker's event loop: end its process at once (its nanny starts a fresh
    one). For a task past its timeout, which no cancel can stop."""
    os._exit(1)
