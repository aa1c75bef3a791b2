"""The ledger: one SQLite row per task and per run; the only authority on what is done.

Only the main process's main thread writes it, one short ``BEGIN IMMEDIATE`` transaction
per committed batch. WAL mode keeps every committed transaction across a ``kill -9``.
Paths are stored as ``os.fsencode`` bytes (BLOB) so names that are not valid UTF-8 work.

A batch of small whole files that all succeed is one task of the ledger: one row of
``batches`` whose ``members`` column packs each file's fingerprint, counts and partials
(JSON), next to the batch's totals and merged partials. Writing 20,000 tiny files as
20,000 rows cost the main process more than the workers spent reading them; as 80 rows it
costs almost nothing. Readers see every member as a ``TaskRow`` like any other: the
packing is this module's business. A byte range of a path is in one place only: a row of
``tasks`` or a member of a batch row (a small file that grew keeps its first range as a
member, and its new ranges are rows of ``tasks``).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import LedgerCorruptError, StoreError
from pipeline.models import TaskResult, TaskSpec
from pipeline.store import packing

LEDGER_NAME = "ledger.sqlite"
KEEP_ATTEMPT_RUNS = 20
SCHEMA_VERSION = 3  # 1: tasks keyed by task_id; 2: no batch rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    started     REAL NOT NULL,
    finished    REAL,
    status      TEXT NOT NULL,
    exit_code   INTEGER,
    name        TEXT NOT NULL,
    result_key  TEXT NOT NULL,
    report      TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id     TEXT NOT NULL,
    path        BLOB NOT NULL,
    offset      INTEGER NOT NULL,
    length      INTEGER,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    compression TEXT,
    result_key  TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    run_id      INTEGER,
    finished    REAL,
    duration_s  REAL,
    records_in  INTEGER, records_out INTEGER, malformed INTEGER, undecodable INTEGER,
    bytes_read  INTEGER,
    partials    TEXT,
    part        TEXT,
    part_size   INTEGER,
    part_offset INTEGER,
    content     TEXT,
    error_kind  TEXT,
    error       TEXT,
    started     REAL,
    worker      TEXT,
    PRIMARY KEY (path, offset)
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id    TEXT PRIMARY KEY,
    first_path  BLOB NOT NULL,
    result_key  TEXT NOT NULL,
    run_id      INTEGER,
    finished    REAL,
    attempts    INTEGER NOT NULL,
    files       INTEGER NOT NULL,
    records_in  INTEGER, records_out INTEGER, malformed INTEGER, undecodable INTEGER,
    bytes_read  INTEGER,
    partials    TEXT,
    part        TEXT,
    part_size   INTEGER,
    members     TEXT NOT NULL,
    started     REAL,
    ended       REAL,
    worker      TEXT
);
CREATE INDEX IF NOT EXISTS batches_by_first_path ON batches (first_path);
CREATE TABLE IF NOT EXISTS attempts (
    run_id      INTEGER NOT NULL,
    path        BLOB NOT NULL,
    offset      INTEGER NOT NULL,
    length      INTEGER,
    attempt     INTEGER NOT NULL,
    started     REAL,
    duration_s  REAL,
    worker      TEXT,
    error_kind  TEXT,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_run ON attempts (run_id);
CREATE TABLE IF NOT EXISTS streams (
    seq         INTEGER PRIMARY KEY,
    label       BLOB NOT NULL UNIQUE,
    head        TEXT NOT NULL,
    head_len    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (
    path        BLOB PRIMARY KEY,
    dev         INTEGER NOT NULL,
    ino         INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    covered     INTEGER,
    rotated     INTEGER NOT NULL DEFAULT 0
);
"""
# ``streams`` and ``seen`` serve growing logs only (``pipeline.rotation``): a stream is
# the content of one log over its life (renamed, copied, compressed), its task rows under
# one path, its label; ``seq`` orders streams as first seen (the order of ``records.*``).
# ``seen`` holds the files of the last run, each with the stream it belongs to and how
# much of it (decompressed) is that stream's, up to what was planned (NULL: all of it), and
# whether it was rotated away (renamed from where the log is written, or a copy).
# ``started`` and ``worker`` (host:pid): when and where a task last ran (a batch row: its
# first task's start and its last one's end), for the report's timeline. ``attempts``
# holds the attempts that failed and went round again (a task's row is its last attempt),
# and those abandoned uncharged with their worker pool, kept for the last
# ``KEEP_ATTEMPT_RUNS`` runs.
# Keyed by (path, offset), the order in which tasks are planned, batched and committed:
# a batch's rows go into neighbouring pages (keyed by the task id, a hash, every row
# landed on a random page of a second index: 4x slower at 200,000 files).


@dataclass(frozen=True, slots=True)
class TaskRow:
    """A task as the ledger remembers it."""

    task_id: str
    path: str
    offset: int
    length: int | None
    size: int
    mtime_ns: int
    compression: str | None
    result_key: str
    status: str
    attempts: int
    records_in: int
    records_out: int
    malformed: int
    undecodable: int
    partials_json: str | None
    part: str | None
    part_size: int
    error_kind: str | None
    error: str | None
    part_offset: int = 0  # where this task's records start in its batch's part file
    content: str | None = None  # digest of a small whole file (see worker.content_digest)
    parsed_partials: dict[str, Any] | None = None  # a batch member's, parsed with its batch
    batch_id: str | None = None  # the batch row holding it (None: a row of ``tasks``)
    duration_s: float | None = None  # its last attempt's (None for a packed small file)
    started: float | None = None  # when its last attempt began (a batch member: its batch)
    worker: str | None = None  # host:pid of the worker that ran it

    @property
    def partials(self) -> dict[str, Any] | None:
        """Parsed on demand: planning reads every row but needs no partials."""
        if self.parsed_partials is not None:
            return self.parsed_partials
        return json.loads(self.partials_json) if self.partials_json else None

    def spec(self, reason: str) -> TaskSpec:
        return TaskSpec(
            self.task_id,
            self.path,
            self.offset,
            self.length,
            self.size,
            self.mtime_ns,
            self.compression,
            reason,
        )


@dataclass(frozen=True, slots=True)
class Activity:
    """One bar of a run's timeline: a task's last attempt, a batch row (``tasks`` > 1 files
    packed together: ``path`` is its first), or an attempt that failed, or was abandoned
    with its worker pool, and went round again (``retried``; ``attempts`` is then its
    attempt number, ``error_kind`` why it ended)."""

    path: str
    offset: int
    length: int | None
    tasks: int
    status: str  # done | failed
    attempts: int
    retried: bool
    started: float
    ended: float
    worker: str | None
    records_in: int | None
    records_out: int | None
    malformed: int | None
    bytes_read: int | None
    error_kind: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class StreamRow:
    """A growing log's stream (see ``streams``)."""

    seq: int
    label: str
    head: str
    head_len: int


@dataclass(frozen=True, slots=True)
class SeenRow:
    """A file of the last run of a growing log (see ``seen``)."""

    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    seq: int
    covered: int | None
    rotated: bool = False


_ROW_COLUMNS = (
    "task_id, path, offset, length, size, mtime_ns, compression, result_key, status, "
    "attempts, records_in, records_out, malformed, undecodable, partials, part, part_size, "
    "error_kind, error, part_offset, content, duration_s, started, worker"
)


def _row(values: tuple[Any, ...]) -> TaskRow:
    (
        task_id,
        path,
        offset,
        length,
        size,
        mtime_ns,
        compression,
        result_key,
        status,
        attempts,
        rin,
        rout,
        malformed,
        undecodable,
        partials,
        part,
        part_size,
        ekind,
        error,
        part_offset,
        content,
        duration_s,
        started,
        worker,
    ) = values
    return TaskRow(
        task_id,
        os.fsdecode(path),
        offset,
        length,
        size,
        mtime_ns,
        compression,
        result_key,
        status,
        attempts,
        rin or 0,
        rout or 0,
        malformed or 0,
        undecodable or 0,
        partials,
        part,
        part_size or 0,
        ekind,
        error,
        part_offset or 0,
        content,
        duration_s=duration_s,
        started=started,
        worker=worker,
    )


def _present(db: sqlite3.Connection, table: str, columns: str) -> str:
    """``columns`` (a comma-separated list) with those ``table`` lacks as ``NULL``."""
    have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
    return ", ".join(c if c in have else "NULL" for c in columns.split(", "))


def _text(value: str | None) -> str | None:
    """SQLite TEXT must be valid UTF-8: a file name that is not (decoded by ``os.fsdecode``
    into lone surrogates) is kept as ``\\udcXX`` escapes."""
    if value is None or value.isascii():
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


# Page caches (KiB, negative as SQLite wants them; 2 MiB by default): rows are written and
# read in key order, so a small cache does; the main process stays small and flat.
WRITER_CACHE_KIB = -1024
READER_CACHE_KIB = -256


class Ledger:
    """A connection to ``ledger.sqlite``; use from one thread only."""

    def __init__(self, out_dir: Path, *, readonly: bool = False) -> None:
        self.path = out_dir / LEDGER_NAME
        try:
            if readonly:
                # With no -wal file (no writer, clean close), open it immutable: a plain
                # read-only connection would leave -wal/-shm files behind.
                wal = self.path.with_name(self.path.name + "-wal")
                flags = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
                uri = f"{self.path.resolve().as_uri()}?{flags}"
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0)
            else:
                self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
                os.chmod(self.path, 0o644)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(f"PRAGMA cache_size = {WRITER_CACHE_KIB}")
                self._db.executescript(_SCHEMA)
                columns = {r[1] for r in self._db.execute("PRAGMA table_info(tasks)")}
                if "part_offset" not in columns:  # a ledger from before batching
                    self._db.execute("ALTER TABLE tasks ADD COLUMN part_offset INTEGER")
                for name, kind in (("content", "TEXT"), ("started", "REAL"), ("worker", "TEXT")):
                    if name not in columns:  # a ledger from before the column
                        self._db.execute(f"ALTER TABLE tasks ADD COLUMN {name} {kind}")
                batch_columns = {r[1] for r in self._db.execute("PRAGMA table_info(batches)")}
                for name, kind in (("started", "REAL"), ("ended", "REAL"), ("worker", "TEXT")):
                    if name not in batch_columns:
                        self._db.execute(f"ALTER TABLE batches ADD COLUMN {name} {kind}")
                self._rekey_tasks()
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            # A ledger opened read-only is not migrated: columns it lacks read as NULL.
            self._row_columns = _present(self._db, "tasks", _ROW_COLUMNS)
            self._batch_columns = _present(self._db, "batches", _BATCH_COLUMNS)
            check = self._db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as exc:
            raise LedgerCorruptError(
                f"{self.path}: the ledger is damaged ({exc}); move it away to start afresh "
                "(every input will be processed again)"
            ) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the ledger: {exc}") from exc
        if check and check[0] != "ok":
            raise LedgerCorruptError(f"{self.path}: the ledger is damaged ({check[0]})")

    def close(self) -> None:
        self._db.close()

    def _rekey_tasks(self) -> None:
        """A ledger of schema 1 (tasks keyed by task id) gets the (path, offset) key: its
        rows are copied into a new table in one transaction."""
        keys = {r[1]: r[5] for r in self._db.execute("PRAGMA table_info(tasks)")}
        if keys.get("path") == 1 and keys.get("offset") == 2:
            return
        names = ", ".join(keys)
        with self._transaction() as db:
            db.execute("ALTER TABLE tasks RENAME TO tasks_v1")
            db.execute("DROP INDEX IF EXISTS tasks_by_path")
            start = _SCHEMA.index("CREATE TABLE IF NOT EXISTS tasks")
            db.execute(_SCHEMA[start : _SCHEMA.index(";", start)])
            db.execute(
                f"INSERT OR REPLACE INTO tasks ({names}) SELECT {names} FROM tasks_v1 "
                "ORDER BY rowid"
            )
            db.execute("DROP TABLE tasks_v1")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception rolls back (the write lock is
        never left held), and SQLite errors become a StoreError naming the ledger."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield self._db
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self.path}: {exc}") from exc
            raise

    def _write(self, sql: str, params: Iterable[Any] = ()) -> None:
        with self._transaction() as db:
            db.execute(sql, tuple(params))

    # --- runs -----------------------------------------------------------------------
    def start_run(self, name: str, result_key: str) -> int:
        """A new run; earlier runs still marked running were killed (we hold the lock)."""
        try:
            self._db.execute("UPDATE runs SET status = 'killed' WHERE status = 'running'")
            cur = self._db.execute(
                "INSERT INTO runs (started, status, name, result_key) VALUES (?, 'running', ?, ?)",
                (time.time(), name, result_key),
            )
            run_id = int(cur.lastrowid or 0)
            self._db.execute(
                "DELETE FROM attempts WHERE run_id <= ?", (run_id - KEEP_ATTEMPT_RUNS,)
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        return run_id

    def finish_run(self, run_id: int, status: str, exit_code: int, report: dict) -> None:
        self._write(
            "UPDATE runs SET finished = ?, status = ?, exit_code = ?, report = ? WHERE run_id = ?",
            (time.time(), status, exit_code, json.dumps(report), run_id),
        )

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT run_id, started, finished, status, exit_code, report FROM runs "
            "ORDER BY run_id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            {
                "run_id": r[0],
                "started": r[1],
                "finished": r[2],
                "status": r[3],
                "exit_code": r[4],
                "report": json.loads(r[5]) if r[5] else None,
            }
            for r in rows
        ]

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def committed_state(self, result_key: str) -> str:
        """Changes whenever the set of committed results changes: a task committed, a file's
        tasks replaced. Lets a run with nothing new skip rebuilding the outputs."""
        count, last, size = self._db.execute(
            "SELECT count(*), max(finished), total(part_size) FROM tasks "
            "WHERE status = 'done' AND result_key = ?",
            (result_key,),
        ).fetchone()
        batches = self._db.execute(
            "SELECT count(*), total(files), max(finished), total(part_size), total(records_in) "
            "FROM batches WHERE result_key = ?",
            (result_key,),
        ).fetchone()
        return f"{result_key}:{count}:{last}:{size}:" + ":".join(map(str, batches))

    # --- tasks ----------------------------------------------------------------------
    def tasks(self) -> Iterator[TaskRow]:
        """Every task, in the deterministic output order: by path bytes, then offset."""
        return self._ordered(
            f"SELECT {self._row_columns} FROM tasks ORDER BY path, offset", (), "", ()
        )

    def tasks_for_planning(self) -> Iterator[TaskRow]:
        """Every task in path order (as ``tasks``), without the stats partials of
        ``tasks`` rows: planning never needs them."""
        columns = self._row_columns.replace("partials,", "NULL,")
        return self._ordered(f"SELECT {columns} FROM tasks ORDER BY path, offset", (), "", ())

    def committed(self, result_key: str) -> Iterator[TaskRow]:
        """The done tasks of the current result-affecting config, in output order —
        streamed, so the final outputs never hold every row in memory."""
        query = (
            f"SELECT {self._row_columns} FROM tasks WHERE status = 'done' AND result_key = ? "
            "ORDER BY path, offset"
        )
        return self._ordered(query, (result_key,), "WHERE result_key = ?", (result_key,))

    def _ordered(
        self, query: str, params: tuple[Any, ...], batch_filter: str, batch_params: tuple[Any, ...]
    ) -> Iterator[TaskRow]:
        """Rows of ``tasks`` (``query``, in path order) merged with the members of the batch
        rows that ``batch_filter`` selects, in (path bytes, offset) order. A batch is
        unpacked only when the merge reaches its first path, so memory holds the batches
        that overlap the current path (usually one), not the ledger."""
        heap: list[tuple[tuple[bytes, int], int, TaskRow, Iterator[TaskRow]]] = []
        tie = itertools.count()

        def push(rows: Iterator[TaskRow]) -> None:
            row = next(rows, None)
            if row is not None:
                heapq.heappush(heap, ((os.fsencode(row.path), row.offset), next(tie), row, rows))

        push(_row(values) for values in self._db.execute(query, params))
        batches = self._db.execute(
            f"SELECT first_path, {self._batch_columns} FROM batches {batch_filter} "
            "ORDER BY first_path",
            batch_params,
        )
        pending = next(batches, None)
        while heap or pending is not None:
            while pending is not None and (not heap or pending[0] <= heap[0][0][0]):
                push(iter(_member_rows(pending[1:])))
                pending = next(batches, None)
            _, _, row, rows = heapq.heappop(heap)
            yield row
            push(rows)

    def committed_in_streams(self, result_key: str) -> Iterator[TaskRow]:
        """``committed`` for growing logs (never packed into batch rows): stream by stream
        in the order they were first seen (the order their lines were written), each in
        offset order; rows of no stream (none are expected) after them, in path order."""
        query = (
            f"SELECT {self._row_columns} FROM tasks LEFT JOIN streams ON path = label "
            "WHERE status = 'done' AND result_key = ? "
            "ORDER BY seq IS NULL, seq, path, offset"
        )
        return (_row(values) for values in self._db.execute(query, (result_key,)))

    def run_activity(self, run_id: int) -> Iterator[Activity]:
        """What run ``run_id`` ran, for the report's timeline: its committed task rows, its
        batch rows and the attempts that went round again (``attempts``), each with when
        and where it ran (rows without a start, from a ledger before timing was kept, are
        left out)."""
        where = "status IN ('done', 'failed')"
        for values in self._timed("tasks", _ACTIVITY_TASK_COLUMNS, where, run_id):
            path, offset, length, status, attempts, started, duration, *rest = values
            end = started + (duration or 0.0)
            yield Activity(
                os.fsdecode(path), offset, length, 1, status, attempts, False, started, end, *rest
            )
        for values in self._timed("batches", _ACTIVITY_BATCH_COLUMNS, "1", run_id):
            path, files, attempts, started, ended, *rest = values
            end = ended or started
            yield Activity(
                os.fsdecode(path), 0, None, files, "done", attempts, False, started, end, *rest,
                None, None,
            )  # fmt: skip
        for values in self._timed("attempts", _ACTIVITY_ATTEMPT_COLUMNS, "1", run_id):
            path, offset, length, attempt, started, duration, worker, kind, error = values
            end = started + (duration or 0.0)
            yield Activity(
                os.fsdecode(path), offset, length, 1, "failed", attempt, True, started, end,
                worker, 0, 0, 0, 0, kind, error,
            )  # fmt: skip

    def _timed(
        self, table: str, columns: str, where: str, run_id: int
    ) -> Iterable[tuple[Any, ...]]:
        """``columns`` of the rows of ``table`` that run ``run_id`` wrote with a start, by
        start; none when the table or its ``started`` column is missing (a ledger from
        before timings were kept, opened read-only)."""
        present = _present(self._db, table, columns)
        if ", started," not in present:
            return ()
        return self._db.execute(
            f"SELECT {present} FROM {table} WHERE run_id = ? AND {where} "
            "AND started IS NOT NULL ORDER BY started",
            (run_id,),
        )

    def streams(self) -> list[StreamRow]:
        """A growing log's streams, in the order they were first seen."""
        query = "SELECT seq, label, head, head_len FROM streams ORDER BY seq"
        return [
            StreamRow(seq, os.fsdecode(label), head, head_len)
            for seq, label, head, head_len in self._rows_of(query)
        ]

    def seen(self) -> list[SeenRow]:
        """The files the last run of a growing log saw."""
        query = (
            "SELECT path, dev, ino, size, mtime_ns, seq, covered, rotated FROM seen ORDER BY path"
        )
        return [
            SeenRow(os.fsdecode(path), *rest[:-1], bool(rest[-1]))
            for path, *rest in self._rows_of(query)
        ]

    def _rows_of(self, query: str) -> list[tuple[Any, ...]]:
        """A query's rows; none when its table is not there (a ledger from before growing
        logs, opened read-only)."""
        try:
            return self._db.execute(query).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise

    def committed_partials(
        self, result_key: str, *, except_run: int | None = None
    ) -> Iterator[dict[str, Any] | None]:
        """The stats partials of the done tasks, streamed (a batch's merged partials in
        one); ``except_run``: leave out the tasks that run committed (the runner already
        holds their merge)."""
        where = "WHERE result_key = ?"
        params: tuple[Any, ...] = (result_key,)
        if except_run is not None:
            where += " AND run_id IS NOT ?"
            params += (except_run,)
        for (text,) in self._db.execute(
            f"SELECT partials FROM tasks {where} AND status = 'done'", params
        ):
            yield json.loads(text) if text else None
        for text, members in self._db.execute(
            f"SELECT partials, members FROM batches {where}", params
        ):
            if text is not None:
                yield json.loads(text)
            else:  # a member left the batch: its merge is gone, the members' remain
                for member in packing.unpack(members):
                    yield member[packing.M_PARTIALS]

    def committed_counts(self, result_key: str) -> dict[str, int]:
        """``records`` of report.json: totals over the committed tasks."""
        totals = [0, 0, 0, 0]
        for where in ("tasks WHERE status = 'done' AND", "batches WHERE"):
            row = self._db.execute(
                "SELECT total(records_in), total(records_out), total(malformed), "
                f"total(undecodable) FROM {where} result_key = ?",
                (result_key,),
            ).fetchone()
            totals = [a + int(b) for a, b in zip(totals, row, strict=True)]
        return dict(zip(("in", "out", "malformed", "undecodable"), totals, strict=True))

    def part_names(self) -> set[str]:
        """Every part file some task still points at."""
        query = "SELECT DISTINCT part FROM tasks UNION SELECT DISTINCT part FROM batches"
        return {r[0] for r in self._db.execute(query) if r[0]}

    def replace_tasks(
        self,
        drop_paths: Iterable[str],
        planned: Iterable[TaskSpec],
        result_key: str,
        run_id: int,
        touched: Iterable[tuple[str, int, int]] = (),
    ) -> None:
        """A whole plan's changes in one transaction (see ``PlanRecorder``), for callers
        that hold the plan as lists: the batch rows holding the paths are found by a scan."""
        touched = list(touched)
        drop_paths = list(drop_paths)
        with self.recording_plan(result_key, run_id) as rec:
            holder = self._batches_holding({t[0] for t in touched} | set(drop_paths))
            for path, size, mtime_ns in touched:
                rec.touch(path, size, mtime_ns, holder.get(path))
            for path in drop_paths:
                rec.drop(path, holder.get(path))
            rec.pending(planned)

    @contextlib.contextmanager
    def recording_plan(self, result_key: str, run_id: int) -> Iterator[PlanRecorder]:
        """Record a plan, file by file, in one transaction: all of it or nothing."""
        with self.recording(self.plan_recorder(result_key, run_id)) as recorder:
            yield recorder

    def plan_recorder(self, result_key: str, run_id: int) -> PlanRecorder:
        """A recorder for a plan made step by step (each step in ``recording``)."""
        return PlanRecorder(self._db, result_key, run_id)

    @contextlib.contextmanager
    def recording(self, recorder: PlanRecorder) -> Iterator[PlanRecorder]:
        """A part of a plan recorded in one transaction, its batch edits applied at the
        end. Each step stands on its own: a plan interrupted between steps leaves every
        file either planned or untouched, and the next run plans the rest."""
        with self._transaction():
            yield recorder
            recorder.flush()

    def _batches_holding(self, paths: set[str]) -> dict[str, str]:
        """``{path: batch_id}`` for the paths that are members of a batch row."""
        if not paths:
            return {}
        return {
            row.path: row.batch_id
            for row in self.tasks_for_planning()
            if row.batch_id is not None and row.path in paths
        }

    def reader(self) -> Ledger:
        """A second connection to this ledger for reading while this one writes: in WAL
        mode it sees the ledger as it was at its first read, until closed."""
        other = Ledger.__new__(Ledger)
        other.path = self.path
        other._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        other._db.execute(f"PRAGMA cache_size = {READER_CACHE_KIB}")
        other._db.execute("BEGIN")
        other._row_columns, other._batch_columns = self._row_columns, self._batch_columns
        return other

    def commit_task(
        self, task: TaskSpec, result: TaskResult, attempts: int, run_id: int, result_key: str
    ) -> None:
        self.commit_tasks({task.task_id: task}, [result], attempts, run_id, result_key)

    def commit_tasks(
        self,
        tasks: Mapping[str, TaskSpec],
        results: Sequence[TaskResult],
        attempts: int,
        run_id: int,
        result_key: str,
        earlier: Sequence[tuple[int, TaskResult]] = (),
    ) -> None:
        """Record finished tasks (done or failed) — one batch, one transaction. ``tasks``
        describe them by id (at least every task in ``results``); ``earlier`` are their
        attempts that failed or were abandoned and went round again (attempt number,
        result).

        The done whole files a worker packed (``TaskResult.packed``) become one batch row.
        The rest (failures, ranges of split files, a batch of one) are rows of ``tasks``:
        a task without a pending row is inserted whole, one that has one is updated."""
        now = time.time()
        packed = next((r.packed for r in results if r.packed is not None), None)
        skip = packed.task_ids if packed is not None else frozenset()
        rows = [
            (
                *_identity(tasks[r.task_id], result_key),
                "done" if r.ok else "failed",
                attempts,
                run_id,
                now,
                r.duration_s,
                r.records_in,
                r.records_out,
                r.malformed,
                r.undecodable,
                r.bytes_read,
                json.dumps(r.partials) if r.ok else None,
                r.part if r.ok else None,
                r.part_offset,
                r.part_size,
                r.error_kind,
                _text(r.error),
                r.content,
                r.started or None,
                _worker(r),
            )
            for r in results
            if r.task_id not in skip
        ]
        with self._transaction() as db:
            if packed is not None:
                db.execute(
                    "INSERT OR REPLACE INTO batches (first_path, files, records_in, "
                    "records_out, malformed, undecodable, bytes_read, part_size, partials, "
                    "members, batch_id, result_key, run_id, finished, attempts, part, "
                    "started, ended, worker) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        packed.first_path,
                        *packed.totals,
                        json.dumps(packed.merged),
                        packed.members,
                        packed.row_id,
                        result_key,
                        run_id,
                        now,
                        attempts,
                        packed.part,
                        *(packed.span if packed.span[0] else (None, None)),
                        _worker(next(r for r in results if r.packed is packed)),
                    ),
                )
            if rows:
                db.executemany(_UPSERT, rows)
            if earlier:
                db.executemany(
                    "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            run_id,
                            os.fsencode(tasks[r.task_id].path),
                            tasks[r.task_id].offset,
                            tasks[r.task_id].length,
                            attempt,
                            r.started or None,
                            r.duration_s if r.started else None,
                            _worker(r),
                            r.error_kind,
                            _text(r.error),
                        )
                        for attempt, r in earlier
                    ],
                )


_BATCH_COLUMNS = "result_key, attempts, part, members, batch_id, started, worker"
_ACTIVITY_TASK_COLUMNS = (
    "path, offset, length, status, attempts, started, duration_s, worker, records_in, "
    "records_out, malformed, bytes_read, error_kind, error"
)
_ACTIVITY_ATTEMPT_COLUMNS = (
    "path, offset, length, attempt, started, duration_s, worker, error_kind, error"
)
_ACTIVITY_BATCH_COLUMNS = (
    "first_path, files, attempts, started, ended, worker, records_in, records_out, malformed, "
    "bytes_read"
)


def _worker(result: TaskResult) -> str | None:
    """``host:pid`` of the worker that ran a task (None: it never reached one)."""
    return f"{result.host}:{result.pid}" if result.pid else None


def _member_rows(values: tuple[Any, ...]) -> list[TaskRow]:
    """The members of a batch row (``_BATCH_COLUMNS``) as TaskRows, in path order (the
    fields as ``packing.member`` lays them out)."""
    result_key, attempts, part, members, batch_id, started, worker = values
    return [
        TaskRow(
            task_id,
            path,
            0,
            length,
            size,
            mtime_ns,
            compression,
            result_key,
            "done",
            attempts,
            records_in,
            records_out,
            malformed,
            undecodable,
            None,
            part,
            part_size,
            None,
            None,
            part_offset,
            content,
            partials,
            batch_id,
            started=started,
            worker=worker,
        )
        for (
            task_id,
            path,
            length,
            size,
            mtime_ns,
            compression,
            records_in,
            records_out,
            malformed,
            undecodable,
            _bytes_read,
            partials,
            part_offset,
            part_size,
            content,
            _duration_s,
        ) in packing.unpack(members)
    ]


class PlanRecorder:
    """A plan's changes to the ledger, file by file, inside ``Ledger.recording_plan``:

    - a changed file's earlier results go (``drop``): its rows, or its place in a batch row;
    - a touched file (same bytes, new mtime) or one that only grew keeps them under its
      new size and mtime (``touch``);
    - the ranges of split files are recorded as pending (``pending``). A task that is its
      file's only one gets no pending row: it is written once, when it is committed.
      Pending rows are what keeps a split file's ranges across an interruption: a file
      with some ranges in the ledger is never cut again.

    Edits of batch rows wait, grouped by batch (a batch's members are neighbours in path
    order), and are applied a few dozen batches at a time."""

    FLUSH_AT = 64  # batches with edits waiting

    def __init__(self, db: sqlite3.Connection, result_key: str, run_id: int) -> None:
        self._db = db
        self._result_key = result_key
        self._run_id = run_id
        self._edits: dict[str, tuple[set[str], dict[str, tuple[int, int]]]] = {}

    def file(
        self,
        path: str,
        rows: Sequence[TaskRow],
        *,
        drop: bool,
        touched: tuple[int, int] | None,
        run: Iterable[TaskSpec],
    ) -> None:
        """One planned file, given the ledger rows planning saw for it; ``touched``: the
        (size, mtime) its kept rows take."""
        in_tasks = any(r.batch_id is None for r in rows)
        batch_id = next((r.batch_id for r in rows if r.batch_id is not None), None)
        if touched is not None:
            self.touch(path, *touched, batch_id, in_tasks=in_tasks)
        if drop:
            self.drop(path, batch_id, in_tasks=in_tasks)
        self.pending(run)

    def touch(
        self, path: str, size: int, mtime_ns: int, batch_id: str | None, *, in_tasks: bool = True
    ) -> None:
        if in_tasks:
            self._db.execute(
                "UPDATE tasks SET size = ?, mtime_ns = ? WHERE path = ?",
                (size, mtime_ns, os.fsencode(path)),
            )
        if batch_id is not None:
            self._edit(batch_id)[1][path] = (size, mtime_ns)

    def drop(self, path: str, batch_id: str | None, *, in_tasks: bool = True) -> None:
        if in_tasks:
            self._db.execute("DELETE FROM tasks WHERE path = ?", (os.fsencode(path),))
        if batch_id is not None:
            self._edit(batch_id)[0].add(path)

    def pending(self, tasks: Iterable[TaskSpec], *, every: bool = False) -> None:
        """Pending rows for the tasks of split files (``every``: for all of them)."""
        rows = [
            (*_identity(t, self._result_key), self._run_id, self._run_id)
            for t in tasks
            if every or not t.covers_file
        ]
        if rows:
            self._db.executemany(_PENDING, rows)

    def forget_streams(self) -> None:
        """A growing log's store starts over (``--full``, a config change): every row,
        stream and seen file goes."""
        for table in ("tasks", "batches", "streams", "seen"):
            self._db.execute(f"DELETE FROM {table}")

    def move_streams(self, moves: Sequence[tuple[str, str]]) -> None:
        """Streams take new labels (``(old, new)`` pairs), their rows with them: first
        each to a name no path can have, then to its new one, so that labels passed on
        along a rotation (``.1`` to ``.2``, the log to ``.1``) never collide."""
        steps = [(old, f"\0moving\0{i}", new) for i, (old, new) in enumerate(moves)]
        for first, second in ((0, 1), (1, 2)):
            for step in steps:
                before, after = os.fsencode(step[first]), os.fsencode(step[second])
                self._db.execute("UPDATE tasks SET path = ? WHERE path = ?", (after, before))
                self._db.execute("UPDATE streams SET label = ? WHERE label = ?", (after, before))

    def put_streams(self, streams: Iterable[StreamRow]) -> None:
        self._db.executemany(
            "INSERT INTO streams (seq, label, head, head_len) VALUES (?, ?, ?, ?) ON CONFLICT"
            "(seq) DO UPDATE SET label = excluded.label, head = excluded.head, "
            "head_len = excluded.head_len",
            [(s.seq, os.fsencode(s.label), s.head, s.head_len) for s in streams],
        )

    def replace_seen(self, seen: Iterable[SeenRow]) -> None:
        self._db.execute("DELETE FROM seen")
        self._db.executemany(
            "INSERT INTO seen (path, dev, ino, size, mtime_ns, seq, covered, rotated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (os.fsencode(s.path), s.dev, s.ino, s.size, s.mtime_ns, s.seq, s.covered, s.rotated)
                for s in seen
            ],
        )

    def _edit(self, batch_id: str) -> tuple[set[str], dict[str, tuple[int, int]]]:
        edit = self._edits.get(batch_id)
        if edit is None:
            if len(self._edits) >= self.FLUSH_AT:
                self.flush()
            edit = self._edits[batch_id] = (set(), {})
        return edit

    def flush(self) -> None:
        """Apply the waiting batch edits: members dropped (a row left empty goes) or given
        a new size and mtime. A batch that loses a member loses its merged partials: its members'
        own stand in for them."""
        for batch_id, (drop, touched) in self._edits.items():
            found = self._db.execute(
                "SELECT members, partials FROM batches WHERE batch_id = ?", (batch_id,)
            ).fetchone()
            if found is None:
                continue
            members = packing.unpack(found[0])
            kept = [m for m in members if m[packing.M_PATH] not in drop]
            if not kept:
                self._db.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))
                continue
            for member in kept:
                if member[packing.M_PATH] in touched:
                    member[packing.M_SIZE], member[packing.M_MTIME] = touched[
                        member[packing.M_PATH]
                    ]
            merged = found[1] if len(kept) == len(members) else None
            self._db.execute(
                "UPDATE batches SET first_path = ?, files = ?, records_in = ?, records_out = ?,"
                " malformed = ?, undecodable = ?, bytes_read = ?, part_size = ?, partials = ?,"
                " members = ? WHERE batch_id = ?",
                (*packing.batch_totals(kept), merged, packing.pack(kept), batch_id),
            )
        self._edits.clear()


_PENDING = (
    "INSERT INTO tasks (task_id, path, offset, length, size, mtime_ns, compression,"
    " result_key, status, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)"
    " ON CONFLICT(path, offset) DO UPDATE SET status = 'pending', run_id = ?,"
    " task_id = excluded.task_id, length = excluded.length, size = excluded.size,"
    " mtime_ns = excluded.mtime_ns, result_key = excluded.result_key"
)


def _identity(task: TaskSpec, result_key: str) -> tuple[Any, ...]:
    """The leading columns of a task's row: what it is, and under which config."""
    return (
        task.task_id,
        os.fsencode(task.path),
        task.offset,
        task.length,
        task.size,
        task.mtime_ns,
        task.compression,
        result_key,
    )


_RESULT_COLUMNS = (
    "status",
    "attempts",
    "run_id",
    "finished",
    "duration_s",
    "records_in",
    "records_out",
    "malformed",
    "undecodable",
    "bytes_read",
    "partials",
    "part",
    "part_offset",
    "part_size",
    "error_kind",
    "error",
    "content",
    "started",
    "worker",
)
_UPSERT = (
    "INSERT INTO tasks (task_id, path, offset, length, size, mtime_ns, compression, result_key, "
    + ", ".join(_RESULT_COLUMNS)
    + ") VALUES ("
    + ", ".join("?" * (8 + len(_RESULT_COLUMNS)))
    + ") ON CONFLICT(path, offset) DO UPDATE SET "
    + ", ".join(
        f"{c} = excluded.{c}"
        for c in ("task_id", "length", "size", "mtime_ns", "compression", *_RESULT_COLUMNS)
    )
)
