"""Failed attempts that go round again reach the ledger with their task's final outcome,
stamped with when and where they ran (the report's timeline draws them)."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.executors.base import AttemptLog, Fault, Schedule, settle
from pipeline.models import Batch, TaskResult, TaskSpec
from pipeline.store.ledger import Ledger


def spec(i: int) -> TaskSpec:
    return TaskSpec(f"t{i}", f"/d/{i}.log", 100 * i, 100, 1000, 1)


def failed(task: TaskSpec, started: float = 5.0) -> TaskResult:
    return TaskResult(
        task.task_id, ok=False, error_kind="error", error="boom", started=started,
        duration_s=0.5, host="h", pid=7,
    )  # fmt: skip


def done(task: TaskSpec) -> TaskResult:
    return TaskResult(task.task_id, ok=True, records_in=3, started=9.0, host="h", pid=8)


def test_a_retried_failure_comes_back_with_the_outcome_of_its_task() -> None:
    t0, t1 = spec(0), spec(1)
    history = AttemptLog()
    outcome, retry = settle(Batch.of((t0, t1)), [failed(t0), done(t1)], 1, 2, False, history)
    assert outcome is not None and outcome.earlier == ()  # t1 never failed
    assert retry is not None and [t.task_id for t in retry.tasks] == ["t0"]
    outcome, retry = settle(retry, [failed(t0, 6.0)], 2, 2, False, history)
    assert outcome is None and retry is not None
    outcome, retry = settle(retry, [done(t0)], 3, 2, False, history)
    assert retry is None and outcome is not None and outcome.attempts == 3
    assert [(n, r.started) for n, r in outcome.earlier] == [(1, 5.0), (2, 6.0)]
    assert history.attach(outcome) is outcome  # given once, then forgotten


def test_a_fault_fails_its_batch_stamped_with_its_attempt() -> None:
    before = time.time()
    fault = Fault("timeout", "too slow", started=before - 2.0, host="h", pid=42)
    (result,) = fault.results(Batch.of((spec(3),)))
    assert (result.ok, result.error_kind, result.host, result.pid) == (False, "timeout", "h", 42)
    assert result.error == "/d/3.log: too slow" and result.started == before - 2.0
    assert 2.0 <= result.duration_s <= time.time() - before + 2.0
    assert Fault("crashed", "lost").results(Batch.of((spec(3),)))[0].duration_s == 0.0


def test_a_released_batch_keeps_its_faults_until_its_last_attempt() -> None:
    batch = Batch.of((spec(0),))
    schedule = Schedule(iter([batch]), window=2, retries=1)
    assert schedule.take() == (batch, 1)
    first = Fault("crashed", "killed", started=1.0, host="h", pid=10)
    assert schedule.release(batch.batch_id, first) is None  # charged; goes round again
    assert schedule.take() == (batch, 2)
    outcome = schedule.release(batch.batch_id, Fault("timeout", "slow", 3.0, "h", 11))
    assert outcome is not None and outcome.attempts == 2
    assert [(r.error_kind, r.pid) for r in outcome.results] == [("timeout", 11)]
    assert [(n, r.error_kind, r.pid) for n, r in outcome.earlier] == [(1, "crashed", 10)]


def test_an_abandoned_attempt_is_kept_but_not_charged() -> None:
    """A batch stopped with its pool for another batch's fault goes round at the same
    attempt; when it had started, the attempt comes back with its final outcome."""
    batch = Batch.of((spec(0),))
    schedule = Schedule(iter([batch]), window=2, retries=0)
    schedule.take()
    lost = Fault("abandoned", "stopped with its pool", started=1.0, host="h", pid=10)
    assert schedule.release(batch.batch_id, lost=lost) is None
    assert schedule.take() == (batch, 1)  # not charged: retries=0 still allows it
    outcome = schedule.retire(batch.batch_id, [done(spec(0))])
    assert outcome is not None and outcome.attempts == 1
    assert [(n, r.error_kind, r.pid) for n, r in outcome.earlier] == [(1, "abandoned", 10)]


def test_the_ledger_keeps_earlier_attempts_beside_the_final_row(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    run = ledger.start_run("job", "k")
    task = spec(2)
    ledger.commit_tasks(
        {task.task_id: task}, [done(task)], 2, run, "k", earlier=[(1, failed(task))]
    )
    activity = sorted(ledger.run_activity(run), key=lambda a: a.retried)
    ledger.close()
    final, attempt = activity
    assert (final.retried, final.status, final.attempts, final.worker) == (False, "done", 2, "h:8")
    assert (attempt.retried, attempt.attempts, attempt.error_kind) == (True, 1, "error")
    assert (attempt.offset, attempt.length, attempt.worker) == (200, 100, "h:7")
    assert (attempt.started, attempt.ended) == (5.0, 5.5)


def test_attempts_of_old_runs_are_let_go(tmp_path: Path) -> None:
    from pipeline.store.ledger import KEEP_ATTEMPT_RUNS

    ledger = Ledger(tmp_path)
    task = spec(0)
    first = ledger.start_run("job", "k")
    ledger.commit_tasks({task.task_id: task}, [done(task)], 2, first, "k", [(1, failed(task))])
    for _ in range(KEEP_ATTEMPT_RUNS - 1):
        ledger.start_run("job", "k")
    assert [a.retried for a in ledger.run_activity(first)].count(True) == 1
    ledger.start_run("job", "k")
    assert [a.retried for a in ledger.run_activity(first)].count(True) == 0
    ledger.close()
