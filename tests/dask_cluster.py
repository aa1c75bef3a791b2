"""A real Dask cluster for the tests: a ``dask scheduler`` and ``dask worker`` processes on
127.0.0.1, each in its own session and working folder.

Every process of the cluster runs in a mount namespace of its own (``unshare --mount``,
root) where the *private* folder — the tests' configs, plugin modules and output stores —
is an empty tmpfs: the workers cannot import a plugin unless it was shipped to them, and
anything they wrote into an output store would land in that tmpfs, where the client never
sees it. Inputs live in the *shared* folder, which every process sees at the same path
(the shared filesystem the SPEC asks for).

The scheduler runs with ``pipeline`` unimportable (``sys.modules["pipeline"] = None``): a
test passes only if no pipeline code (nor user code) is ever unpickled there.

``stop`` ends every process by process group (SIGTERM, then SIGKILL) and fails the test
if any is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.faults.test_worker_faults import session_processes

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0

SCHEDULER_CODE = (
    "import sys; sys.modules['pipeline'] = None; "
    "from distributed.cli.dask_scheduler import main; main()"
)
# A worker without the nanny, for a worker that must not import pipeline (a nanny's worker
# process is a fresh interpreter that the -c code would not reach).
BARE_WORKER_CODE = (
    "import sys; sys.modules['pipeline'] = None; "
    "from distributed.cli.dask_worker import main; main()"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid``."""
    return [int(item.split()[1]) for item in session_processes(sid)]


@dataclass
class DaskCluster:
    address: str
    base: Path
    private: Path
    shared: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    tls: Path | None = None  # a folder with ca.pem, cert.pem, key.pem (make_certificates)

    def tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--tls-ca-file",
            str(self.tls / "ca.pem"),
            "--tls-cert",
            str(self.tls / "cert.pem"),
            "--tls-key",
            str(self.tls / "key.pem"),
        ]

    def client_env(self) -> dict[str, str]:
        """dask's settings for a client of this cluster (its TLS credentials)."""
        if self.tls is None:
            return {}
        return {
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(self.tls / "ca.pem"),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(self.tls / "cert.pem"),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(self.tls / "key.pem"),
        }

    def start_process(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``argv`` in a session of its own, in a mount namespace where ``private``
        is an empty tmpfs, working in a folder of its own."""
        folder = self.base / name
        folder.mkdir(parents=True, exist_ok=True)
        log = self.base / f"{name}.log"
        script = 'mount -t tmpfs -o size=1m tmpfs "$1" || exit 97; shift; exec "$@"'
        command = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
            str(self.private),
            *argv,
        ]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command,
                cwd=folder,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        self.logs.append(log)

    def add_worker(self, name: str, env: dict[str, str] | None = None, bare: bool = False) -> None:
        folder = self.base / name
        common = [
            "--nthreads",
            "1",
            "--host",
            "127.0.0.1",
            "--local-directory",
            str(folder),
            "--no-dashboard",
            "--name",
            name,
            *self.tls_args(),
        ]
        if bare:
            argv = [sys.executable, "-c", BARE_WORKER_CODE, self.address, "--no-nanny", *common]
        else:
            argv = [sys.executable, "-m", "distributed.cli.dask_worker", self.address, *common]
        self.start_process(name, argv, env)

    def connect(self):  # -> distributed.Client
        from distributed import Client
        from distributed.security import Security

        security = None
        if self.tls is not None:
            security = Security(
                tls_ca_file=str(self.tls / "ca.pem"),
                tls_client_cert=str(self.tls / "cert.pem"),
                tls_client_key=str(self.tls / "key.pem"),
                require_encryption=True,
            )
        return Client(self.address, timeout=5, set_as_default=False, security=security)

    def wait_for_workers(self, n: int, timeout: float = READY_TIMEOUT_S) -> None:
        if n == 0:
            return
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            for proc, log in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    pytest.fail(f"a cluster process ended ({proc.returncode}):\n{tail(log)}")
            try:
                with self.connect() as client:
                    client.wait_for_workers(n, timeout=max(1.0, deadline - time.monotonic()))
                    return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.2)
        pytest.fail(f"the Dask cluster did not get {n} workers in {timeout}s: {last}")

    def kill_scheduler(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.procs[0].pid, signal.SIGKILL)
        self.procs[0].wait(10)

    def stop(self) -> None:
        """Every process by its group: SIGTERM, then SIGKILL; fail if any survives."""
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(session_pids(p.pid) for p in self.procs):
            time.sleep(0.05)
        left = [pid for proc in self.procs for pid in session_pids(proc.pid)]
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        time.sleep(0.1)
        still = [pid for proc in self.procs for pid in session_pids(proc.pid)]
        assert not still, f"cluster processes survive SIGKILL: {still}"
        if left:
            # SIGTERM was not enough: SIGKILL did it; a leftover is a harness problem,
            # reported without failing (the worker processes ignore nothing of ours).
            print(f"cluster processes needed SIGKILL: {left}", file=sys.stderr)


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def make_certificates(folder: Path) -> Path:
    """A certificate authority and a certificate it signed for 127.0.0.1 (openssl)."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(command: str) -> None:  # no argument here has a space
        subprocess.run(["openssl", *command.split()], cwd=folder, check=True, capture_output=True)

    key = "-newkey rsa:2048 -nodes"
    openssl(f"req -x509 {key} -days 2 -subj /CN=pipeline-ca -keyout ca.key -out ca.pem")
    openssl(f"req {key} -subj /CN=127.0.0.1 -keyout key.pem -out cert.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    signed = "-CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext"
    openssl(f"x509 -req -in cert.csr {signed} -out cert.pem")
    return folder


def start_cluster(
    base: Path,
    workers: int = 2,
    worker_env: dict[str, str] | None = None,
    tls: Path | None = None,
) -> DaskCluster:
    """A scheduler and ``workers`` workers, ready (over TLS with ``tls``'s certificates)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("the Dask cluster tests need root and unshare(1) (mount namespaces)")
    private, shared = base / "private", base / "shared"
    private.mkdir(parents=True, exist_ok=True)
    shared.mkdir(parents=True, exist_ok=True)
    port = free_port()
    scheme = "tcp" if tls is None else "tls"
    cluster = DaskCluster(f"{scheme}://127.0.0.1:{port}", base, private, shared, tls=tls)
    cluster.start_process(
        "scheduler",
        [
            sys.executable,
            "-c",
            SCHEDULER_CODE,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
            *(["--protocol", "tls"] if tls is not None else []),
            *cluster.tls_args(),
        ],
    )
    try:
        for i in range(workers):
            cluster.add_worker(f"worker{i}", worker_env)
        cluster.wait_for_workers(workers)
    except BaseException:
        cluster.stop()
        raise
    return cluster
