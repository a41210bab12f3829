"""Exercise 1 Q5: the grid search that fills Tables 1 and 2 with the test accuracy of Q4's ResNet-18.

- Table 1: weight decay {0.1, 0.01, 0.001} (rows) x learning rate λ {1.0, 0.1, 0.01, 0.001} (columns), batch 64.
- Table 2: batch size {5, 64, 200} (rows) x λ, weight decay 0.001.

The tables share their (weight decay 0.001, batch 64) cells: 20 distinct cells, each trained once and shown
in both tables. A cell (``train_cell``) builds Q4's ``ResNet18`` from the same initial weights (seeded) and
trains it with Q2's ``train``, on the same batch order, with ``SGD(λ, momentum=0.9, weight_decay)`` at a
constant λ: no schedule, no augmentation. Then, honestly measured:

- **Batch-norm statistics recomputed.** Before any evaluation, the running mean and variance of every
  batch-norm layer are recomputed on 1,000 training images (``torch.optim.swa_utils.update_bn``; no weight
  changes). The running averages kept during training lag behind the weights: a few updates leave them
  near their initial values, a large λ moves the weights faster than they follow. An accuracy measured
  with them would show that lag, not what the weights learned.
- **Diverged** means a NaN/inf training loss (``train`` returns one or raises ``FloatingPointError``; the
  cell stops there) or a training loss that ends above its start: the loss on those 1,000 training images
  (statistics recomputed) after training against before. A cell that has not learned much is not diverged.
- **Validation chooses, test reports.** ``test`` measures each cell on the validation split (the last
  10,000 training digits, never trained on) and on the official test digits. The tables show the test
  accuracy; the best cell (in bold) is the one with the best validation accuracy among those that did not
  diverge. A cell whose training raised an error is ``failed``: no number, trained again by the next run.

Budget. By default every cell makes the same number of SGD updates (``--updates 200``) on batches drawn
from the 50,000 training digits, reshuffled at each pass: batch 5 sees 1,000 images, batch 64 12,800,
batch 200 40,000. Cells are evaluated on 5,000 validation digits (``--val-size``) and on all 10,000 test
digits. On an idle 2-core CPU with ``--workers 2`` (one thread each) the whole grid takes 11.9 min
(``time python exercise1/q5_grid_search.py``: 715 s). ``--epochs E`` trains E passes over the training set instead
(the TP's protocol: at equal epochs a smaller batch makes more updates). ``--full`` is the GPU recipe:
3 epochs over the 50,000 training digits, all validation and test digits; a batch-5 cell then makes
30,000 updates, a batch-200 cell 750, about 151,000 updates in all: not yet run on a GPU, expect 10-20 minutes
there at a few milliseconds per step (``python exercise1/q5_grid_search.py --full --workers 2``).

The grid runs on Optuna (``utils/grid.py``): one study holds every cell, queued once;
- ``--workers 1`` trains in this process; ``--workers N`` starts N worker processes (on a CPU they split
  its cores, on one GPU they share it);
- the default storage is a journal file under ``--out``; with ``--storage postgresql://user@host/db`` the
  same command started on several machines shares the study, and every cell is trained once;
- re-running the same command trains only what is missing: cells never trained, cells of killed workers,
  failed cells. The study is named after the settings that change results (budget, data, seed, stem), so
  other settings start another study and old results stay in the storage.

Outputs under ``--out`` (default ``runs/grid/``): ``table1.csv``/``.md`` and ``table2.csv``/``.md`` (rows
weight decay / batch size, columns λ, test accuracy in %); ``results.json`` (every cell: validation and
test accuracy, losses, updates, time; the best cell of each table), read by ``report/build.py`` to fill the
Q5 comment; TensorBoard curves and hyper-parameters of each cell under ``cells/<cell>/``
(``tensorboard --logdir runs/grid``); one log per worker process under ``logs/``.

Run: ``python exercise1/q5_grid_search.py [--table 1|2|both] [--workers 2] [--storage URL]``
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch.optim.swa_utils import update_bn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from exercise1.q2_module_mlp import test, train  # noqa: E402
from exercise1.q4_resnet import STEMS, ResNet18  # noqa: E402
from utils.grid import CellOutcome, GridStudy, TableCell, cell_key, format_grid_csv, format_grid_markdown  # noqa: E402
from utils.grid import open_storage  # noqa: E402
from utils.io import write_json_atomic, write_text_atomic  # noqa: E402
from utils.mnist import MnistData, add_mnist_arguments, mnist_from_args, stratified_subset, tensor_loader  # noqa: E402
from utils.training import (  # noqa: E402
    DRY_RUN_BATCHES,
    RunLogger,
    configure_cpu_threads,
    progress_disabled,
    resolve_device,
    seed_everything,
)

LEARNING_RATES = (1.0, 0.1, 0.01, 0.001)
WEIGHT_DECAYS = (0.1, 0.01, 0.001)
BATCH_SIZES = (5, 64, 200)
TABLE1_BATCH_SIZE = 64
TABLE2_WEIGHT_DECAY = 0.001
MOMENTUM = 0.9
DEFAULT_UPDATES = 200
DEFAULT_VAL_SIZE = 5000
FULL_EPOCHS = 3
PROBE_IMAGES = 1000  # training images that measure the start/end loss and give batch norm its statistics
PROBE_BATCH = 250
DRY_RUN_EVAL_IMAGES = 100
EVAL_BATCH = 1000
DEFAULT_WORKERS = 2
POLL_SECONDS = 2.0
CELLS_FOLDER = "cells"
# A training step costs about as much as 25 more images in its batch (ResNet-18, 1 CPU thread): the
# costliest cells are queued first, so that workers finish together.
STEP_COST_IMAGES = 25


# --------------------------------------------------------------------------- the two tables
@dataclasses.dataclass(frozen=True)
class GridTable:
    """One TP table: ``row_param`` (rows) x learning rate (columns), the third hyper-parameter fixed."""

    key: str
    title: str
    row_param: str
    row_values: tuple
    learning_rates: tuple
    fixed_param: str
    fixed_value: float | int

    def cell(self, row: float | int, lr: float) -> dict[str, Any]:
        """The hyper-parameters of the cell at ``row``, ``lr``: ``lr``, ``weight_decay``, ``batch_size``."""
        return {"lr": float(lr), self.row_param: row, self.fixed_param: self.fixed_value}


def build_tables(learning_rates: tuple, weight_decays: tuple, batch_sizes: tuple) -> dict[str, GridTable]:
    return {
        "1": GridTable("table1", "Table 1", "weight_decay", tuple(map(float, weight_decays)), learning_rates,
                       "batch_size", TABLE1_BATCH_SIZE),
        "2": GridTable("table2", "Table 2", "batch_size", tuple(map(int, batch_sizes)), learning_rates,
                       "weight_decay", TABLE2_WEIGHT_DECAY),
    }


def cell_name(cell: dict[str, Any]) -> str:
    """The folder of a cell's curves, e.g. ``lr0.1_wd0.001_bs64``."""
    return f"lr{cell['lr']}_wd{cell['weight_decay']}_bs{cell['batch_size']}"


@dataclasses.dataclass(frozen=True)
class GridSettings:
    """Everything a worker needs (sent to a worker process pickled)."""

    tables: tuple[GridTable, ...]
    study: str
    storage: str
    out: str
    updates: int | None  # SGD updates per cell, or None: ``epochs`` whole passes
    epochs: int
    seed: int
    dry_run: bool
    stem: str
    probe_images: int
    device: str
    threads: int | None


def training_passes(batches_per_pass: int, settings: GridSettings) -> list[int]:
    """Batches of each call to ``train``: ``epochs`` whole passes, or passes adding up to ``updates`` batches."""
    if settings.updates is None:
        return [batches_per_pass] * settings.epochs
    whole, rest = divmod(settings.updates, batches_per_pass)
    return [batches_per_pass] * whole + ([rest] if rest else [])


def probe_batches(data: MnistData, settings: GridSettings) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``settings.probe_images`` training images in near-equal batches of at most ``PROBE_BATCH``
    (none of one image, which batch norm cannot normalise in training mode)."""
    count = min(settings.probe_images, len(data.train_labels))
    chunks = -(-count // PROBE_BATCH)
    return list(zip(data.train_images[:count].tensor_split(chunks), data.train_labels[:count].tensor_split(chunks)))


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- one cell
def training_loss(model: torch.nn.Module, device: torch.device, probe: list) -> tuple[float, float]:
    """Loss and accuracy on the probe's training images, batch-norm statistics first recomputed on them.

    The model keeps those statistics: every evaluation after this one uses them.
    """
    # BEGIN SOLUTION
    update_bn(probe, model, device)
    return test(model, device, probe)
    # END SOLUTION


def train_cell(cell: dict[str, Any], settings: GridSettings, data: MnistData) -> CellOutcome:
    """Train one cell (``lr``, ``weight_decay``, ``batch_size``); the value is its validation accuracy in [0, 1].

    ``data`` holds the training, validation and test images on the training device.
    """
    # BEGIN SOLUTION
    name = cell_name(cell)
    # This worker owns the cell: curves left by an interrupted earlier attempt would overlap the new ones.
    shutil.rmtree(Path(settings.out) / CELLS_FOLDER / name, ignore_errors=True)
    device = data.train_images.device
    seed_everything(settings.seed)  # every cell starts from the same weights: only the hyper-parameters differ
    model = ResNet18(num_classes=10, in_channels=1, stem=settings.stem).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cell["lr"], momentum=MOMENTUM,
                                weight_decay=cell["weight_decay"])
    # Shuffled with the same seed in every cell, the last partial batch dropped (never a batch of one).
    loader = tensor_loader(data.train_images, data.train_labels, cell["batch_size"], train=True, seed=settings.seed,
                           max_batches=DRY_RUN_BATCHES if settings.dry_run else None)
    probe = probe_batches(data, settings)
    logger = RunLogger(settings.out, CELLS_FOLDER, name, {**cell, "momentum": MOMENTUM, "seed": settings.seed})
    started, cpu_started = time.perf_counter(), time.process_time()

    start_loss, _ = training_loss(model, device, probe)
    divergence, updates, images = None, 0, 0
    for epoch, batches in enumerate(training_passes(len(loader), settings), start=1):
        try:
            train_loss, train_accuracy = train(model, device, itertools.islice(loader, batches), optimizer)
        except FloatingPointError as error:
            divergence = f"FloatingPointError in pass {epoch}: {error}"
            break
        updates += batches
        images += batches * min(cell["batch_size"], len(data.train_labels))
        logger.log_epoch(epoch, {"Loss/train": train_loss, "Accuracy/train": train_accuracy})
        if not math.isfinite(train_loss):
            divergence = f"training loss {train_loss} in pass {epoch}"
            break
    end_loss, end_accuracy = training_loss(model, device, probe)
    if divergence is None and not end_loss <= start_loss:  # also true for NaN
        divergence = f"training loss ended at {end_loss:.4f}, above its start {start_loss:.4f}"
    val_loss, val_accuracy = test(model, device, tensor_loader(data.val_images, data.val_labels, EVAL_BATCH,
                                                               train=False))
    test_loss, test_accuracy = test(model, device, tensor_loader(data.test_images, data.test_labels, EVAL_BATCH,
                                                                 train=False))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started

    diverged = divergence is not None
    results = {"start_loss": start_loss, "end_loss": end_loss, "end_accuracy": end_accuracy,
               "val_loss": val_loss, "val_accuracy": val_accuracy, "test_loss": test_loss,
               "test_accuracy": test_accuracy}
    logger.final.update(results)
    logger.save(status="diverged" if diverged else "ok", divergence=divergence, updates=updates, images=images)
    # run_name "." keeps the hyper-parameters in the cell's own folder, so HPARAMS links them to its curves.
    logger.writer.add_hparams(cell, {"hparam/val_accuracy": val_accuracy, "hparam/test_accuracy": test_accuracy,
                                     "hparam/diverged": float(diverged)}, run_name=".")
    logger.close()
    return CellOutcome(value=val_accuracy, diverged=diverged, attrs={
        **{key: finite_or_none(value) for key, value in results.items()},
        "divergence": divergence, "updates": updates, "images": images, "passes": len(logger.history),
        "train_seconds": seconds, "cpu_seconds": cpu_seconds,
    })
    # END SOLUTION


# --------------------------------------------------------------------------- the tables
@dataclasses.dataclass(frozen=True)
class CellResult:
    """What the storage holds of one cell: ``status`` (``ok``, ``diverged``, ``failed``, ``running``,
    ``queued``), accuracies in [0, 1] where it finished, and every attribute its trial recorded."""

    status: str
    val_accuracy: float | None
    test_accuracy: float | None
    attrs: dict[str, Any]


def fill_table(table: GridTable, results: dict[str, CellResult]) -> tuple[dict[tuple, TableCell], tuple | None]:
    """``(row, lr) -> TableCell`` (status and test accuracy) for every cell of ``table`` that has a result, and
    the ``(row, lr)`` of the best cell: the highest validation accuracy among cells that did not diverge or
    fail (the first in row order on a tie; None when there is none).

    ``results`` maps ``cell_key(table.cell(row, lr))`` to the cell's result.
    """
    # BEGIN SOLUTION
    cells, best, best_accuracy = {}, None, -math.inf
    for row in table.row_values:
        for lr in table.learning_rates:
            result = results.get(cell_key(table.cell(row, lr)))
            if result is None:
                continue
            cells[(row, lr)] = TableCell(result.status, result.test_accuracy)
            if result.status == "ok" and result.val_accuracy > best_accuracy:
                best, best_accuracy = (row, lr), result.val_accuracy
    return cells, best
    # END SOLUTION


def cell_result(trial: FrozenTrial) -> CellResult:
    """The result of a cell from the trial that shows it."""
    if trial.state == TrialState.COMPLETE:
        status = trial.user_attrs.get("status", "ok")
    else:
        status = {TrialState.FAIL: "failed", TrialState.RUNNING: "running"}.get(trial.state, "queued")
    finished = status in ("ok", "diverged")
    return CellResult(status, trial.value if finished else None,
                      trial.user_attrs.get("test_accuracy") if finished else None, dict(trial.user_attrs))


def read_results(grid: GridStudy) -> dict[str, CellResult]:
    return {key: cell_result(trial) for key, trial in grid.outcomes().items()}


def caption(table: GridTable, settings: GridSettings, data: MnistData) -> str:
    rows = table.row_param.replace("_", " ")
    return (f"{table.title}: test accuracy (%) of ResNet-18 ({settings.stem} stem) on {len(data.test_labels):,} "
            f"test digits; rows {rows}, columns learning rate λ, {table.fixed_param.replace('_', ' ')} "
            f"{table.fixed_value}; SGD momentum {MOMENTUM}, {budget_text(settings)} from {len(data.train_labels):,} "
            f"training digits. **Bold**: best on {len(data.val_labels):,} validation digits; \"(diverged)\": the "
            f"training loss became NaN/inf or ended above its start.")


def budget_text(settings: GridSettings) -> str:
    if settings.updates is not None:
        return f"{settings.updates} updates per cell"
    return f"{settings.epochs} epoch(s) per cell"


def write_outputs(grid: GridStudy, settings: GridSettings, data: MnistData, cells: list[dict[str, Any]],
                  wall_seconds: float) -> dict[str, Any]:
    """Write ``<table>.csv``, ``<table>.md`` and ``results.json`` under ``settings.out``; return the results."""
    out = Path(settings.out)
    results = read_results(grid)
    summary: dict[str, Any] = {
        "settings": {"updates": settings.updates, "epochs": None if settings.updates else settings.epochs,
                     "train_images": len(data.train_labels), "val_images": len(data.val_labels),
                     "test_images": len(data.test_labels),
                     "probe_images": min(settings.probe_images, len(data.train_labels)),
                     "seed": settings.seed, "stem": settings.stem, "momentum": MOMENTUM, "data": data.source,
                     "dry_run": settings.dry_run, "storage": settings.storage, "study": settings.study},
        "wall_seconds": wall_seconds,
        "complete": grid.is_complete(cells),
        "cells": [],
        "tables": {},
    }
    for cell in cells:
        result = results.get(cell_key(cell))
        entry = {**cell, "status": result.status if result else "missing"}
        if result is not None:
            entry.update({"val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy,
                          **{name: result.attrs.get(name) for name in (
                              "updates", "images", "start_loss", "end_loss", "divergence", "train_seconds",
                              "cpu_seconds", "error")}})
        summary["cells"].append(entry)
    for table in settings.tables:
        table_cells, best = fill_table(table, results)
        corner = f"{table.row_param} \\ lr"
        write_text_atomic(out / f"{table.key}.csv",
                          format_grid_csv(corner, table.row_values, table.learning_rates, table_cells))
        markdown = format_grid_markdown(corner.replace("_", " ").replace("lr", "λ"), table.row_values,
                                        table.learning_rates, table_cells, [best] if best else [],
                                        caption(table, settings, data))
        write_text_atomic(out / f"{table.key}.md", markdown)
        print("\n" + markdown)
        best_result = results[cell_key(table.cell(*best))] if best else None
        summary["tables"][table.key] = {
            "row_param": table.row_param, "rows": list(table.row_values),
            "learning_rates": list(table.learning_rates), "fixed": {table.fixed_param: table.fixed_value},
            "complete": grid.is_complete(table.cell(row, lr) for row in table.row_values
                                         for lr in table.learning_rates),
            "best": None if best is None else {table.row_param: best[0], "lr": best[1],
                                               "val_accuracy": best_result.val_accuracy,
                                               "test_accuracy": best_result.test_accuracy},
        }
    write_json_atomic(out / "results.json", summary)
    return summary


# --------------------------------------------------------------------------- workers
def run_worker(settings: GridSettings, data: MnistData, on_finished=None) -> int:
    """Train queued cells until none is left; returns how many this worker trained.

    ``data`` is the grid's data on the CPU; it moves to the worker's device.
    """
    warnings.filterwarnings("ignore", module="optuna")  # heartbeats are "experimental", every trial would say so
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    configure_cpu_threads(settings.threads)
    data = data.to(resolve_device(settings.device))
    grid = GridStudy(open_storage(settings.storage), settings.study)
    return grid.run(lambda cell: train_cell(cell, settings, data), on_finished)


def worker_process(settings: GridSettings, data: MnistData, log_path: str) -> None:
    """Entry point of a worker process: everything it prints goes to its log, the console keeps the bar."""
    with open(log_path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        trained = run_worker(settings, data, on_finished=lambda trial: print(describe(trial), flush=True))
        print(f"worker {os.getpid()}: trained {trained} cell(s)", flush=True)


def threads_per_worker(device: torch.device, workers: int) -> int | None:
    """CPU threads of each of ``workers`` workers: the cores split evenly, at most ``OMP_NUM_THREADS`` when it
    is set (None: a GPU does the work)."""
    if device.type != "cpu":
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cpus // workers)
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(limit)) if limit.isdigit() and int(limit) > 0 else threads


def describe(trial: FrozenTrial) -> str:
    result, cell = cell_result(trial), json.loads(trial.user_attrs["cell"])
    seconds = trial.user_attrs.get("train_seconds")
    text = (f"validation {100 * result.val_accuracy:.2f}%, test {100 * result.test_accuracy:.2f}%"
            if result.val_accuracy is not None else result.status)
    timing = f" in {seconds:.0f} s" if seconds is not None else ""
    return f"{cell_name(cell)}: {text}{' (diverged)' if result.status == 'diverged' else ''}{timing}"


def run_in_process(settings: GridSettings, data: MnistData, total: int) -> None:
    """One worker in this process (``--workers 1``): no subprocess, the same code a worker process runs."""
    from tqdm import tqdm

    threads = torch.get_num_threads()
    bar = tqdm(total=total, desc="cells", unit="cell", disable=progress_disabled())
    try:
        run_worker(settings, data, on_finished=lambda trial: (bar.write(describe(trial)), bar.update(1)))
    finally:
        bar.close()
        torch.set_num_threads(threads)


def run_processes(settings: GridSettings, data: MnistData, grid: GridStudy, workers: int) -> None:
    """``workers`` worker processes, a bar over the cells until they exit; Ctrl-C stops them all."""
    from tqdm import tqdm

    log_dir = Path(settings.out) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_paths = [log_dir / f"{stamp}-worker{index}.log" for index in range(workers)]
    print(f"Worker logs: {log_dir}/")
    context = multiprocessing.get_context("spawn")  # CUDA and Optuna's threads do not survive a fork
    processes = [context.Process(target=worker_process, args=(settings, data, str(path))) for path in log_paths]
    for process in processes:
        process.start()
    seen = {trial.number for trial in finished_trials(grid)}
    bar = tqdm(total=grid.waiting(), desc="cells", unit="cell", disable=progress_disabled())
    try:
        while True:
            alive = any(process.is_alive() for process in processes)
            for trial in finished_trials(grid):
                if trial.number not in seen:
                    seen.add(trial.number)
                    bar.write(describe(trial))
                    bar.update(1)
            if not alive:
                break
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        print("\nInterrupted: the cells in flight are lost; re-run the same command to finish the grid.")
        for process in processes:  # a Ctrl-C reaches them too, a signal sent to this process alone does not
            process.terminate()
    finally:
        bar.close()
        for process in processes:
            process.join()
    for process, path in zip(processes, log_paths):
        if process.exitcode != 0:
            print(f"warning: a worker exited with code {process.exitcode}, see {path}")


def finished_trials(grid: GridStudy) -> list[FrozenTrial]:
    return [trial for trial in grid.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
            if trial.user_attrs.get("status") in ("ok", "diverged", "failed")]


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="both", choices=["1", "2", "both"], help="which table (default both)")
    parser.add_argument("--updates", type=int, default=DEFAULT_UPDATES,
                        help=f"SGD updates per cell, the same for every batch size (default {DEFAULT_UPDATES})")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train this many passes over the training set per cell instead of --updates")
    parser.add_argument("--full", action="store_true",
                        help=f"the GPU recipe: --epochs {FULL_EPOCHS} (unless given) on every training, validation "
                             f"and test digit")
    parser.add_argument("--train-size", type=int, default=0,
                        help="class-stratified training subset, 0 for all 50,000 training digits (default 0)")
    parser.add_argument("--val-size", type=int, default=None,
                        help=f"validation digits evaluated per cell, 0 for all 10,000 (default {DEFAULT_VAL_SIZE})")
    parser.add_argument("--test-size", type=int, default=0,
                        help="test digits evaluated per cell, 0 for all 10,000 (default 0)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"worker processes on this machine; 1 trains in this process (default {DEFAULT_WORKERS})")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage shared by every worker: an RDB URL (postgresql://user@host/db) for "
                             "several machines, or a journal file path (default <out>/optuna-journal.log)")
    parser.add_argument("--out", default=None,
                        help="tables, results and curves folder (default runs/grid, runs/grid-dry-run with --dry-run)")
    parser.add_argument("--stem", default="imagenet", choices=STEMS,
                        help="ResNet-18 input stem (default imagenet, as Q4)")
    parser.add_argument("--lrs", type=float, nargs="+", default=list(LEARNING_RATES),
                        help="learning rates, the columns of both tables (default the TP's 1.0 0.1 0.01 0.001)")
    parser.add_argument("--weight-decays", type=float, nargs="+", default=list(WEIGHT_DECAYS),
                        help="rows of Table 1 (default the TP's 0.1 0.01 0.001)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES),
                        help="rows of Table 2 (default the TP's 5 64 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: weights, batches, subsets (default 0)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto picks CUDA when available")
    parser.add_argument("--dry-run", action="store_true",
                        help=f"{DRY_RUN_BATCHES} updates per cell, {DRY_RUN_EVAL_IMAGES} validation and test digits: "
                             f"checks the code path")
    add_mnist_arguments(parser)
    args = parser.parse_args(argv)
    for flag in ("updates", "epochs", "workers"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise SystemExit(f"error: --{flag} must be >= 1, got {value}")
    for flag in ("train_size", "val_size", "test_size", "seed"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise SystemExit(f"error: --{flag.replace('_', '-')} must be >= 0, got {value}")
    if min(args.lrs) <= 0:
        raise SystemExit(f"error: --lrs values must be > 0, got {args.lrs}")
    if min(args.weight_decays) < 0:
        raise SystemExit(f"error: --weight-decays values must be >= 0, got {args.weight_decays}")
    if min(args.batch_sizes) < 2:
        raise SystemExit(f"error: --batch-sizes values must be >= 2 (batch norm normalises over the batch), "
                         f"got {args.batch_sizes}")
    if args.full:
        args.epochs, args.train_size = args.epochs or FULL_EPOCHS, 0
        args.val_size, args.test_size = 0, 0
    if args.val_size is None:
        args.val_size = DEFAULT_VAL_SIZE
    if args.dry_run:
        args.epochs = 1 if args.epochs else None
        args.updates = DRY_RUN_BATCHES
        args.val_size, args.test_size = DRY_RUN_EVAL_IMAGES, DRY_RUN_EVAL_IMAGES
    if args.out is None:  # a check of the code path must not overwrite the real tables
        args.out = "runs/grid-dry-run" if args.dry_run else "runs/grid"
    return args


@functools.lru_cache(maxsize=4)
def load_grid_mnist(data_root: str | None, download: bool) -> MnistData:
    """MNIST with its validation split, on the CPU, read once per process (tests call ``main`` repeatedly)."""
    return mnist_from_args(argparse.Namespace(data_root=data_root, download=download), validation=True)


def subset(images: torch.Tensor, labels: torch.Tensor, size: int, seed: int, flag: str) -> tuple[torch.Tensor, ...]:
    """A class-stratified random ``size`` of a split (all of it for 0 or more than it holds); one line if impossible."""
    if size == 0 or size >= len(labels):
        return images, labels
    try:
        index = torch.as_tensor(stratified_subset(labels.numpy(), size, seed))
    except ValueError as error:  # fewer images than digit classes, or too few left out
        raise SystemExit(f"error: {flag} {size}: cannot draw a class-stratified subset of {len(labels):,} images "
                         f"({error})") from None
    return images[index], labels[index]


def build_settings(args: argparse.Namespace) -> tuple[GridSettings, MnistData]:
    """The worker settings of parsed ``args`` and the grid's data (subsets drawn, on the CPU).

    The workers get the data from here, so MNIST is read once, not once per worker.
    """
    full = load_grid_mnist(args.data_root, args.download)
    train_images, train_labels = subset(full.train_images, full.train_labels, args.train_size, args.seed,
                                        "--train-size")
    val_images, val_labels = subset(full.val_images, full.val_labels, args.val_size, args.seed, "--val-size")
    test_images, test_labels = subset(full.test_images, full.test_labels, args.test_size, args.seed, "--test-size")
    data = MnistData(train_images, train_labels, test_images, test_labels, full.source, val_images, val_labels)
    tables = build_tables(tuple(args.lrs), tuple(args.weight_decays), tuple(args.batch_sizes))
    chosen = tuple(tables.values()) if args.table == "both" else (tables[args.table],)
    budget = f"u{args.updates}" if args.epochs is None else f"e{args.epochs}"
    identity = {"budget": budget, "train": len(train_labels), "val": len(val_labels), "test": len(test_labels),
                "seed": args.seed, "stem": args.stem, "momentum": MOMENTUM, "dry_run": args.dry_run,
                "probe": [PROBE_IMAGES, PROBE_BATCH], "data": [full.source.split(" from ")[0], len(full.train_labels),
                                                               len(full.val_labels), len(full.test_labels)]}
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    settings = GridSettings(
        tables=chosen, study=f"q5-{budget}-n{len(train_labels)}-s{args.seed}-{digest}",
        storage=args.storage or str(Path(args.out) / "optuna-journal.log"), out=args.out,
        updates=args.updates if args.epochs is None else None, epochs=args.epochs or 1, seed=args.seed,
        dry_run=args.dry_run, stem=args.stem, probe_images=DRY_RUN_EVAL_IMAGES if args.dry_run else PROBE_IMAGES,
        device=args.device, threads=None,
    )
    return settings, data


def grid_cells(tables: Iterable[GridTable], settings: GridSettings, train_images: int) -> list[dict[str, Any]]:
    """The distinct cells of ``tables`` (a cell two tables share once), the costliest first."""
    cells = {cell_key(cell): cell for table in tables for row in table.row_values for lr in table.learning_rates
             for cell in [table.cell(row, lr)]}

    def cost(cell: dict[str, Any]) -> float:
        batch = min(cell["batch_size"], train_images)
        updates = settings.updates or settings.epochs * max(1, train_images // batch)
        return updates * (STEP_COST_IMAGES + batch)

    return sorted(cells.values(), key=cost, reverse=True)


def open_grid(settings: GridSettings) -> GridStudy:
    """The grid's study, created if absent (a bad ``--storage`` is a one-line error)."""
    try:
        return GridStudy(open_storage(settings.storage), settings.study)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", module="optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = resolve_device(args.device)
    settings, data = build_settings(args)
    too_big = [size for size in args.batch_sizes if size > len(data.train_labels)]
    if too_big:
        print(f"warning: batch size(s) {too_big} exceed the {len(data.train_labels)} training images: those cells "
              f"train on batches of {len(data.train_labels)}")
    grid = open_grid(settings)
    cells = grid_cells(settings.tables, settings, len(data.train_labels))
    grid.fail_dead_trials()
    queued = grid.queue_missing(cells)
    to_train = grid.waiting()
    workers = min(args.workers, to_train)
    settings = dataclasses.replace(settings, threads=threads_per_worker(device, max(workers, 1)))
    print(f"Grid: {len(cells)} distinct cells, {len(cells) - len(queued)} already done or in progress, "
          f"{to_train} to train by {workers} worker(s); study {settings.study} in {settings.storage}; "
          f"data {data.describe()}; curves: tensorboard --logdir {args.out}")

    started = time.perf_counter()
    if workers == 1:
        run_in_process(settings, data, to_train)
    elif workers > 1:
        run_processes(settings, data, grid, workers)
    wall_seconds = time.perf_counter() - started
    results = write_outputs(grid, settings, data, cells, wall_seconds)
    missing = [cell_name(cell) for cell, entry in zip(cells, results["cells"])
               if entry["status"] not in ("ok", "diverged")]
    print(f"Wall time of this run {wall_seconds / 60:.1f} min; results: {Path(args.out) / 'results.json'}"
          + (f"; not finished: {', '.join(missing)} (failed, interrupted or running elsewhere: re-run)"
             if missing else ""))
    return results


if __name__ == "__main__":
    main()
