"""The plan, made while the run goes: batches are handed to the executor as soon as
they exist, and the main thread plans further ahead whenever it would otherwise wait for
results. On two cores, planning 20,000 small files (a ``stat`` and a ledger lookup each)
no longer holds up the workers.

Files are planned in steps of ``STEP_FILES``; each step's decisions are recorded in one
ledger transaction, committed before any of its batches can leave, so a result is never
committed ahead of the plan it belongs to (a changed file's old row is dropped first).
The ledger's earlier rows are read through a second connection that keeps seeing the
ledger as it was before the plan, whatever this run commits meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from pipeline.discovery import Discovery
from pipeline.models import Batch, InputFile
from pipeline.planning import Batcher, Plan, Planner, join_rows
from pipeline.rotation import plan_growing
from pipeline.store.ledger import Ledger, TaskRow

OnPlanned = Callable[[Plan, bool], None]


class PlanFeed:
    """An iterator of batches that plans as it is pulled (``__next__``) or given idle
    time (``ahead``). ``on_planned(plan, done)`` is called after every step."""

    STEP_FILES = 256  # files planned per step (and per ledger transaction)

    def __init__(
        self,
        ledger: Ledger,
        files: Discovery,
        planner: Planner,
        batcher: Batcher,
        result_key: str,
        run_id: int,
        on_planned: OnPlanned | None = None,
    ) -> None:
        self.plan = Plan(keep=False)
        self.done = False
        self._ledger = ledger
        self._planner = planner
        self._batcher = batcher
        self._recorder = ledger.plan_recorder(result_key, run_id)
        self._reader: Ledger | None = ledger.reader()
        self._discovery = files
        self._files: Generator[tuple[InputFile, list[TaskRow]], None, None] = join_rows(
            files, self._reader.tasks_for_planning()
        )
        self._on_planned = on_planned

    def step(self) -> None:
        """Plan up to ``STEP_FILES`` more files, in one ledger transaction."""
        if self.done:
            return
        if self._planner.growing:
            self._growing_step()
            return
        plan, planner, batcher, recorder = self.plan, self._planner, self._batcher, self._recorder
        exhausted = True
        with self._ledger.recording(recorder):
            for file, rows in self._files:
                task = None if rows else planner.fresh_task(file)
                if task is not None:  # a new file, one task: nothing to record yet
                    plan.add_task(task)
                    batcher.add(task)
                else:
                    decision = planner.decide(file, rows)
                    plan.add(decision)
                    run = decision.run
                    if rows or len(run) != 1 or not run[0].covers_file:
                        recorder.file(
                            file.path,
                            rows,
                            drop=decision.drop,
                            touched=(file.size, file.mtime_ns) if decision.touched else None,
                            run=run,
                        )
                    for task in run:
                        batcher.add(task)
                if plan.n_files % self.STEP_FILES == 0:
                    exhausted = False
                    break
        if exhausted:
            self.done = True
            self.close()
            batcher.finish()
        if self._on_planned is not None:
            self._on_planned(plan, self.done)

    def _growing_step(self) -> None:
        """Growing logs are planned all at once (files are matched across paths), and
        recorded in one transaction: moved streams, new ones, every task pending."""
        assert self._reader is not None
        reader = self._reader
        growing = plan_growing(
            self._discovery,  # its files alone: the ledger's rows are read once, below
            reader.tasks_for_planning(),
            reader.streams(),
            reader.seen(),
            self._planner,
        )
        with self._ledger.recording(self._recorder) as recorder:
            if growing.forget:
                recorder.forget_streams()
            recorder.move_streams(growing.moves)
            recorder.put_streams(growing.streams)
            recorder.replace_seen(growing.seen)
            for decision in growing.decisions:
                self.plan.add(decision)
                recorder.pending(decision.run, every=True)
        for decision in growing.decisions:
            for task in decision.run:
                self._batcher.add(task)
        self.done = True
        self.close()
        self._batcher.finish()
        if self._on_planned is not None:
            self._on_planned(self.plan, self.done)

    def plan_until(self, enough: Callable[[Plan], bool]) -> None:
        """Plan until ``enough(plan)`` or the end."""
        while not self.done and not enough(self.plan):
            self.step()

    def ahead(self) -> bool:
        """One step of planning ahead, for a main thread with nothing else to do; False
        once the plan is complete."""
        self.step()
        return not self.done

    def __iter__(self) -> PlanFeed:
        return self

    def __next__(self) -> Batch:
        while (batch := self._batcher.take()) is None:
            if self.done:
                raise StopIteration
            self.step()
        return batch

    def close(self) -> None:
        """Release the ledger snapshot and the folders the walk holds open (the plan is
        over, or the run is)."""
        self._files.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
