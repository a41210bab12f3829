"""Grid searches on Optuna: every cell trained once by any number of workers, resumable, on the public API.

A cell is a dict of hyper-parameters, e.g. ``{"batch_size": 64, "lr": 0.1, "weight_decay": 0.001}``. One
study holds every cell of a search, whichever table asked for it, so two tables that share cells train
them once. :class:`GridStudy` shares the work like this:

- **The queue.** Each cell is queued as a WAITING trial (``Study.enqueue_trial``) that carries its cell in
  the user attribute ``cell``. ``Study.optimize`` pops one waiting trial at a time and the storage makes the
  pop atomic: workers (processes sharing a journal file, machines sharing a PostgreSQL database) never pop
  the same trial.
- **Ownership.** A cell belongs to its lowest-numbered trial that is waiting, running or complete. A
  worker that pops a trial whose cell belongs to an earlier one (two launchers queued it at once), or a
  trial that is not from the queue (another worker took the last one first), prunes it as a ``duplicate``
  before training.
- **Failures.** A ``train`` that raises leaves its trial FAIL (``status`` ``failed``, the error recorded).
  A failed trial holds no cell: the next run queues the cell again; it is never complete, never best.
- **Killed workers.** A killed worker leaves its trial RUNNING. When it ran on this machine its process
  is gone: the trial is failed (``Study.tell``) and its cell queued again. On another machine (PostgreSQL),
  Optuna's heartbeat fails the trial after :data:`GRACE_SECONDS` and :func:`requeue_stale_trial` queues it.
- **Outcomes.** The user attribute ``status`` of a trial says ``running``, ``ok``, ``diverged`` (finished
  with a value that is not a real optimum), ``failed`` or ``duplicate``.

The second half formats a two-parameter table as a lab handout prints it: rows one parameter, columns the
other, the best cell in bold, diverged and failed cells marked.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from utils.io import process_alive

# RDB storages only (the journal has no heartbeat): how often a running trial says it is alive, and how
# long after its last heartbeat a trial on another machine counts as dead.
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120
HOLDING_STATES = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)


# --------------------------------------------------------------------------- storage
def open_storage(storage: str) -> BaseStorage:
    """An Optuna storage from a ``--storage`` value: an RDB URL (``scheme://...``) or a journal file path.

    A journal file is checked line by line first: a corrupt record is a ``ValueError`` naming the file and
    line (Optuna's own error names neither). ``postgresql://`` means SQLAlchemy's psycopg2 driver; when only
    psycopg 3 is installed it is used instead, so the plain URL works. RDB storages get a heartbeat, so
    trials of dead workers on other machines are queued again.
    """
    if "://" not in storage:
        from optuna.storages.journal import JournalFileBackend

        os.makedirs(os.path.dirname(os.path.abspath(storage)), exist_ok=True)
        check_journal(storage)
        return optuna.storages.JournalStorage(JournalFileBackend(storage))
    if storage.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            storage = "postgresql+psycopg://" + storage[len("postgresql://"):]
    try:
        return optuna.storages.RDBStorage(
            storage,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=requeue_stale_trial,
        )
    except Exception as error:  # SQLAlchemy raises many types: bad URL, missing driver, refused connection
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"--storage {storage}: cannot open the Optuna storage ({message})") from None


def check_journal(path: str) -> None:
    """Raise a one-line ``ValueError`` naming ``path`` and the line when a journal record is not whole JSON.

    Optuna stops reading at such a line, and every later write lands after it, unreadable.
    """
    if not os.path.isfile(path):
        return
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            problem = "cut short (no end of line)" if not line.endswith(b"\n") else None
            if problem is None:
                try:
                    json.loads(line)
                except ValueError as error:
                    problem = f"not JSON ({error})"
            if problem:
                raise ValueError(f"{path}: line {number} is not an Optuna journal record: {problem}; move the "
                                 f"file aside to start afresh, or delete that line to keep the other trials")


def requeue_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Heartbeat callback: queue again the cell of a trial whose worker stopped beating."""
    cell = trial.user_attrs.get("cell")
    if cell is not None:
        GridStudy.enqueue(study, json.loads(cell))


# --------------------------------------------------------------------------- the study
def cell_key(cell: Mapping[str, Any]) -> str:
    """The text that names a cell in the storage: its parameters as JSON, keys sorted."""
    return json.dumps(dict(cell), sort_keys=True)


@dataclass
class CellOutcome:
    """What training one cell gives: the objective value, whether it diverged, attributes to record."""

    value: float
    diverged: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)


class GridStudy:
    """One Optuna study whose cells are queued and trained once each, by any number of workers.

    Args:
        storage: where the trials live (see :func:`open_storage`).
        study_name: the study; created if absent.
        direction: ``"maximize"`` or ``"minimize"`` the objective.
    """

    def __init__(self, storage: BaseStorage | str, study_name: str, direction: str = "maximize"):
        self.study = optuna.create_study(storage=storage, study_name=study_name, direction=direction,
                                         load_if_exists=True)

    # ----------------------------------------------------------------------- who holds which cell
    def holders(self, trials: Sequence[FrozenTrial] | None = None) -> dict[str, FrozenTrial]:
        """Cell key -> the trial that holds it (lowest-numbered waiting, running or complete); others absent."""
        trials = self.study.get_trials(deepcopy=False) if trials is None else trials
        held: dict[str, FrozenTrial] = {}
        for trial in sorted(trials, key=lambda trial: trial.number):
            key = trial.user_attrs.get("cell")
            if key is not None and key not in held and trial.state in HOLDING_STATES:
                held[key] = trial
        return held

    def outcomes(self) -> dict[str, FrozenTrial]:
        """Cell key -> the trial that shows its result: its holder, else its latest failed trial."""
        trials = self.study.get_trials(deepcopy=False)
        shown = {trial.user_attrs["cell"]: trial for trial in sorted(trials, key=lambda trial: trial.number)
                 if trial.state == TrialState.FAIL and "cell" in trial.user_attrs}
        return {**shown, **self.holders(trials)}

    def is_complete(self, cells: Iterable[Mapping[str, Any]]) -> bool:
        """Every one of ``cells`` holds a finished (complete) trial."""
        held = self.holders()
        return all(cell_key(cell) in held and held[cell_key(cell)].state == TrialState.COMPLETE for cell in cells)

    # ----------------------------------------------------------------------- the queue
    @staticmethod
    def enqueue(study: optuna.Study, cell: Mapping[str, Any]) -> None:
        """Queue ``cell`` as a WAITING trial of ``study``."""
        study.enqueue_trial(dict(cell), user_attrs={"cell": cell_key(cell)})

    def queue_missing(self, cells: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Queue, in the given order, each of ``cells`` that no trial holds (new, failed or lost); returns them."""
        held = self.holders()
        missing = [dict(cell) for cell in dict((cell_key(cell), cell) for cell in cells).values()
                   if cell_key(cell) not in held]
        for cell in missing:
            self.enqueue(self.study, cell)
        return missing

    def fail_dead_trials(self) -> int:
        """Fail the running trials whose worker process on this machine is gone and queue their cells again."""
        host, failed = socket.gethostname(), 0
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.user_attrs.get("worker")
            if not worker or worker["host"] != host or process_alive(worker["pid"]):
                continue
            try:
                self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
                continue
            failed += 1
        self.queue_missing(json.loads(trial.user_attrs["cell"]) for trial in self.study.get_trials(deepcopy=False)
                           if trial.state == TrialState.FAIL and trial.user_attrs.get("status") == "running")
        return failed

    def waiting(self) -> int:
        """How many queued trials no worker has started yet."""
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    # ----------------------------------------------------------------------- the worker loop
    def run(self, train: Callable[[dict[str, Any]], CellOutcome],
            on_finished: Callable[[FrozenTrial], None] | None = None) -> int:
        """Train queued cells with ``train`` until the queue is empty; returns how many this worker trained.

        ``train(cell)`` gets the cell's parameters and returns a :class:`CellOutcome`. A ``train`` that raises
        leaves the cell ``failed`` and the loop goes on. ``on_finished(trial)`` is called after each trained cell.
        """
        trained = 0

        def objective(trial: optuna.Trial) -> float:
            nonlocal trained
            key = trial.user_attrs.get("cell")
            holder = self.holders().get(key) if key is not None else None
            if holder is None or holder.number != trial.number:
                trial.set_user_attr("status", "duplicate")
                raise optuna.TrialPruned("not from the queue, or another trial holds this cell")
            # Written first, so that a worker killed from here on is recognised as dead.
            trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
            trial.set_user_attr("status", "running")
            cell = json.loads(key)
            for name, value in cell.items():  # a one-point distribution: Optuna records the cell as params
                if isinstance(value, int):
                    trial.suggest_int(name, value, value)
                else:
                    trial.suggest_float(name, value, value)
            trained += 1
            try:
                outcome = train(cell)
            except Exception as error:
                trial.set_user_attr("status", "failed")
                trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
                raise
            for name, value in outcome.attrs.items():
                trial.set_user_attr(name, value)
            trial.set_user_attr("status", "diverged" if outcome.diverged else "ok")
            return outcome.value

        def report(study: optuna.Study, trial: FrozenTrial) -> None:
            if on_finished is not None and trial.user_attrs.get("status") not in ("duplicate", None):
                on_finished(trial)

        while True:
            self.fail_dead_trials()
            if not self.waiting():
                return trained
            self.study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[report])


# --------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class TableCell:
    """One cell of a results table: ``status`` (``ok``, ``diverged``, ``failed``, ``running``) and the
    accuracy in [0, 1] shown, where there is one."""

    status: str
    value: float | None = None


def cell_text(cell: TableCell | None) -> str:
    """A cell as the tables print it: accuracy in % with two decimals, ``(diverged)`` after a diverged one's,
    or what happened instead (``failed``, ``running``; ``-`` when absent). A failed cell shows no number."""
    if cell is None:
        return "-"
    if cell.status in ("ok", "diverged") and cell.value is not None:
        return f"{100 * cell.value:.2f}" + (" (diverged)" if cell.status == "diverged" else "")
    return cell.status


def format_grid_csv(corner: str, row_values: Sequence[Any], column_values: Sequence[Any],
                    cells: Mapping[tuple[Any, Any], TableCell]) -> str:
    """The table as CSV: a header ``corner,<column values>`` then one line per row value."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([corner, *map(str, column_values)])
    for row in row_values:
        writer.writerow([str(row), *(cell_text(cells.get((row, column))) for column in column_values)])
    return buffer.getvalue()


def format_grid_markdown(corner: str, row_values: Sequence[Any], column_values: Sequence[Any],
                         cells: Mapping[tuple[Any, Any], TableCell], best: Iterable[tuple[Any, Any]] = (),
                         caption: str = "") -> str:
    """The table in Markdown, the ``best`` cell(s) in bold, ``caption`` (if any) above it."""
    best = set(best)
    lines = [caption, ""] if caption else []
    lines.append("| " + " | ".join([corner, *map(str, column_values)]) + " |")
    lines.append("|" + "---|" * (len(column_values) + 1))
    for row in row_values:
        texts = []
        for column in column_values:
            text = cell_text(cells.get((row, column)))
            texts.append(f"**{text}**" if (row, column) in best else text)
        lines.append("| " + " | ".join([str(row), *texts]) + " |")
    return "\n".join(lines) + "\n"
