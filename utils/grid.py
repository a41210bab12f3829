"""Grid searches on Optuna that train every cell once, and the tables that show their results.

Optuna's ``GridSampler`` gives trial number ``k`` the ``k``-th cell of its (seeded, shuffled) grid, and
every storage numbers trials atomically, so workers started together (processes sharing a journal
file, machines sharing a PostgreSQL database) start distinct cells. :class:`GridStudy` adds what a
real grid search also needs, on Optuna's own primitives:

- **Killed workers.** A killed worker leaves its trial RUNNING. Such a trial is failed and its cell put
  back in Optuna's queue as a WAITING trial, which exactly one worker can claim: at once when the dead
  process ran on this machine (its pid is gone), after the heartbeat grace period when it ran
  elsewhere (RDB storages, :data:`HEARTBEAT_SECONDS`).
- **Races** (two queue entries for one cell, a trial started after the grid ran out) are settled by
  one rule: a cell belongs to its lowest-numbered trial that is waiting, running, or finished with a
  result; any other trial of that cell is pruned as a ``duplicate`` before it trains. A trial's cell
  is known from the moment the trial exists (its number, or the cell its queue entry carries), so two
  workers can never both believe they own a cell.
- **Outcomes.** Each trial records a ``status`` user attribute: ``ok``, ``diverged`` (finished with a
  result that is not a real optimum), ``failed`` (the training raised; recorded, not retried) or
  ``duplicate``; ``running`` while it trains.

The second half formats a two-parameter grid as the table of a lab handout: rows one parameter,
columns the other, best cell in bold, diverged and failed cells marked.
"""

from __future__ import annotations

import csv
import io
import math
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

# Every process must shuffle the grid the same way: cell ids travel between workers through the storage.
GRID_SEED = 0
# RDB storages only (the journal has no heartbeat): how often a running trial says it is alive, and how
# long after its last heartbeat a trial on another machine counts as dead.
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120


# --------------------------------------------------------------------------- storage
def open_storage(storage: str) -> BaseStorage:
    """An Optuna storage from a ``--storage`` value: an RDB URL (``scheme://...``) or a journal file path.

    ``postgresql://`` means SQLAlchemy's psycopg2 driver; when only psycopg 3 is installed it is used
    instead, so the plain URL works. RDB storages get a heartbeat, so trials of dead workers on other
    machines are re-queued.
    """
    if "://" not in storage:
        from optuna.storages.journal import JournalFileBackend

        os.makedirs(os.path.dirname(os.path.abspath(storage)), exist_ok=True)
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


def requeue_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Heartbeat callback: put the cell of a trial whose worker stopped beating back in the queue."""
    grid = GridStudy.from_study(study)
    cell = grid.cell_of(trial)
    if cell is not None:
        grid.enqueue(cell)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


# --------------------------------------------------------------------------- the study
@dataclass
class CellOutcome:
    """What training one cell gives: the objective value, whether it diverged, attributes to record."""

    value: float
    diverged: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)


class GridStudy:
    """One Optuna study over every combination of ``search_space``, each trained once by any number of workers.

    Args:
        storage: where the trials live (see :func:`open_storage`).
        study_name: the study; created if absent.
        search_space: parameter name -> the values of the grid.
        direction: ``"maximize"`` or ``"minimize"`` the objective.
    """

    def __init__(self, storage: BaseStorage | str, study_name: str, search_space: Mapping[str, Sequence[Any]],
                 direction: str = "maximize"):
        # GridSampler's own form of the space (names sorted, values as lists): queue entries carry it.
        self.search_space = {name: list(values) for name, values in sorted(search_space.items())}
        self.size = math.prod(len(values) for values in self.search_space.values())
        self.sampler = optuna.samplers.GridSampler(self.search_space, seed=GRID_SEED)
        self.study = optuna.create_study(storage=storage, study_name=study_name, sampler=self.sampler,
                                         direction=direction, load_if_exists=True)
        if "grid_search_space" not in self.study.user_attrs:
            self.study.set_user_attr("grid_search_space", self.search_space)

    @classmethod
    def from_study(cls, study: optuna.Study) -> "GridStudy":
        """The grid of an existing study (its search space is a study attribute)."""
        return cls(study._storage, study.study_name, study.user_attrs["grid_search_space"],
                   direction=study.direction.name.lower())

    # ----------------------------------------------------------------------- who owns which cell
    def cell_of(self, trial: FrozenTrial) -> int | None:
        """The cell a trial is for: the one its queue entry carries, else its number while the grid lasts.

        ``None`` for a trial started after the grid ran out (GridSampler then repeats a cell at random).
        """
        if "queued_cell" in trial.system_attrs:
            return int(trial.system_attrs["queued_cell"])
        return trial.number if trial.number < self.size else None

    @staticmethod
    def is_owner(trial: FrozenTrial) -> bool:
        """Whether a trial holds its cell: waiting, running, finished with a result, or failed for real."""
        if trial.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE):
            return True
        return trial.state == TrialState.FAIL and trial.user_attrs.get("status") == "failed"

    def owners(self, trials: Sequence[FrozenTrial] | None = None) -> dict[int, FrozenTrial]:
        """Cell -> the trial that holds it (the lowest-numbered owner); cells nobody holds are absent."""
        trials = self.study.get_trials(deepcopy=False) if trials is None else trials
        held: dict[int, FrozenTrial] = {}
        for trial in sorted(trials, key=lambda trial: trial.number):
            cell = self.cell_of(trial)
            if cell is not None and cell not in held and self.is_owner(trial):
                held[cell] = trial
        return held

    def claim(self, number: int) -> int | None:
        """The cell trial ``number`` may train, or ``None`` when another trial holds it (a duplicate)."""
        trials = self.study.get_trials(deepcopy=False)
        me = next(trial for trial in trials if trial.number == number)
        cell = self.cell_of(me)
        if cell is None:
            return None
        holder = self.owners([trial for trial in trials if trial.number <= number]).get(cell)
        return cell if holder is not None and holder.number == number else None

    # ----------------------------------------------------------------------- the queue
    def enqueue(self, cell: int) -> None:
        """Queue ``cell`` as a WAITING trial; GridSampler turns its ``grid_id`` into parameters."""
        self.study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING,
            system_attrs={"grid_id": cell, "search_space": self.search_space, "queued_cell": cell},
        ))

    def requeue_lost_cells(self) -> list[int]:
        """Fail the trials of dead workers on this machine and queue every cell nobody holds any more.

        A cell whose number no trial has reached yet is left alone: GridSampler gives it to a new trial.
        Returns the cells queued.
        """
        host = socket.gethostname()
        trials = self.study.get_trials(deepcopy=False)
        for trial in trials:
            worker = trial.user_attrs.get("worker")
            if (trial.state == TrialState.RUNNING and worker and worker["host"] == host
                    and not process_alive(worker["pid"])):
                try:
                    self.study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
                except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
                    pass
        trials = self.study.get_trials(deepcopy=False)
        held = self.owners(trials)
        lost = [cell for cell in range(min(self.size, len(trials))) if cell not in held]
        for cell in lost:
            self.enqueue(cell)
        return lost

    def cells_to_start(self) -> int:
        """How many trials workers can still start: queued cells and cells no trial number has reached."""
        trials = self.study.get_trials(deepcopy=False)
        waiting = sum(trial.state == TrialState.WAITING for trial in trials)
        return waiting + max(0, self.size - len(trials))

    # ----------------------------------------------------------------------- the worker loop
    def run(self, train: Callable[[dict[str, Any]], CellOutcome]) -> int:
        """Train cells with ``train`` until none is left to start; returns how many this worker trained.

        ``train(params)`` gets the cell's parameters (name -> grid value) and returns a
        :class:`CellOutcome`. A ``train`` that raises leaves the cell ``failed`` and the loop goes on.
        """
        trained = [0]

        def objective(trial: optuna.Trial) -> float:
            # Written first (one write) so that a worker killed from here on can be recognised as dead.
            trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
            # GridSampler answers with the cell's values; suggested before anything can fail, so every
            # trial, failed or duplicate, shows its cell.
            params = {name: trial.suggest_categorical(name, values) for name, values in self.search_space.items()}
            if self.claim(trial.number) is None:
                trial.set_user_attr("status", "duplicate")
                raise optuna.TrialPruned("another trial holds this cell")
            trial.set_user_attr("status", "running")
            trained[0] += 1
            try:
                outcome = train(params)
            except Exception as error:
                trial.set_user_attr("status", "failed")
                trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
                raise
            for key, value in outcome.attrs.items():
                trial.set_user_attr(key, value)
            trial.set_user_attr("status", "diverged" if outcome.diverged else "ok")
            return outcome.value

        while True:
            self.requeue_lost_cells()
            if self.cells_to_start() == 0:
                return trained[0]
            self.study.optimize(objective, n_trials=1, catch=(Exception,))

    def is_complete(self) -> bool:
        """Every cell holds a finished trial."""
        held = self.owners()
        return len(held) == self.size and all(trial.state.is_finished() for trial in held.values())


# --------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class TableCell:
    """One cell of a results table: ``status`` (``ok``, ``diverged``, ``failed``, ``running``) and the
    objective (an accuracy in [0, 1]) where there is one."""

    status: str
    value: float | None = None


def best_cells(cells: Mapping[tuple[Any, Any], TableCell]) -> set[tuple[Any, Any]]:
    """The keys of the highest-valued ``ok`` cells (all of them on a tie)."""
    values = {key: cell.value for key, cell in cells.items() if cell.status == "ok" and cell.value is not None}
    if not values:
        return set()
    top = max(values.values())
    return {key for key, value in values.items() if value == top}


def cell_text(cell: TableCell | None) -> str:
    """A cell as the tables print it: accuracy in % with two decimals, or what happened instead."""
    if cell is None:
        return "-"
    if cell.status == "ok":
        return f"{100 * cell.value:.2f}"
    if cell.status == "diverged":
        return f"{100 * cell.value:.2f} (diverged)"
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
                         cells: Mapping[tuple[Any, Any], TableCell], caption: str = "") -> str:
    """The table in Markdown, best cell(s) in bold, ``caption`` (if any) above it."""
    best = best_cells(cells)
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
