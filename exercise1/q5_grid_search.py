"""Exercise 1 Q5: the grid search that fills Tables 1 and 2 with the test accuracy of the Q4 ResNet-18.

- Table 1: weight decay {0.1, 0.01, 0.001} (rows) x learning rate lambda {1.0, 0.1, 0.01, 0.001} (columns),
  batch size 64.
- Table 2: batch size {5, 64, 200} (rows) x lambda {1.0, 0.1, 0.01, 0.001} (columns), weight decay 0.001.

Every cell trains the Q4 network (``build_model``, same ``--arch``/``--stem``) from the same initial
weights and batch order, in the TP's setting: plain SGD with momentum 0.9 at the cell's constant
learning rate, weight decay and batch size; no scheduler, no augmentation; with Q2's ``train`` and
``test``. A cell whose epoch training loss is NaN/inf stops after that epoch and is recorded as
``diverged`` with the test accuracy of the model it stopped with (chance level). So is a cell whose
test loss is NaN/inf at the end, or whose last-epoch training loss is above ln 10 (a uniform guess's):
batch norm often keeps lambda = 1.0 from overflowing, and the loss then just stays above chance. A cell
whose training raises is recorded as ``failed``. The grid goes on either way.

The grid runs on Optuna (``GridSampler``, one study per table; the machinery is ``utils/grid.py``):
- ``--workers N`` runs N worker processes on this machine; on a CPU they split its cores, on one GPU
  they share it;
- the default storage is a journal file under ``--out``; with ``--storage postgresql://user@host/db``
  the same command started on several machines shares the studies, and every cell is trained once;
- re-running the same command skips finished cells and trains again only the cells of killed workers.
  A study is named after the settings that change results (grid, epochs, training images, seed,
  network, data), so new settings start a new study and old results stay in the storage.

CPU default: a stratified subset of 1,000 training images (``--train-size``), 3 epochs, 2 workers of
one thread each. The whole 24-cell grid took 29 minutes on a 2-core machine shared with other jobs; its
cells used 967 CPU-seconds in all, about 9 minutes on an idle 2-core CPU. Batch-5 cells cost twice as
much as the others. On a GPU, use the whole training set (``--train-size 0``) and more epochs.

Outputs under ``--out`` (default ``runs/grid/``): ``table1.csv``/``.md`` and ``table2.csv``/``.md`` in the
TP layout (rows weight decay / batch size, columns lambda, best cell in bold, diverged cells marked);
``results.json`` (every cell, and the figures ``report/answers/ex1_q5.md`` inserts); TensorBoard curves
of each cell under ``<table>/<params>/`` with its hyper-parameters for the HPARAMS tab
(``tensorboard --logdir runs/grid``); one log per worker under ``logs/``.

Run: ``python exercise1/q5_grid_search.py [--table 1|2|both] [--workers 2] [--storage URL]``
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from exercise1.q2_module_mlp import test, train  # noqa: E402
from exercise1.q4_resnet import STEMS, build_model  # noqa: E402
from utils.grid import CellOutcome, GridStudy, TableCell, best_cells, cell_text, format_grid_csv  # noqa: E402
from utils.grid import format_grid_markdown, open_storage  # noqa: E402
from utils.io import write_json_atomic, write_text_atomic  # noqa: E402
from utils.mnist import MnistData, add_mnist_arguments, mnist_from_args, mnist_loaders  # noqa: E402
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
DEFAULT_TRAIN_SIZE = 1000
DEFAULT_EPOCHS = 3
DEFAULT_WORKERS = 2
POLL_SECONDS = 2.0
DRY_RUN_TEST_IMAGES = 100


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

    def search_space(self) -> dict[str, list]:
        return {"lr": list(self.learning_rates), self.row_param: list(self.row_values)}

    def hyperparameters(self, params: dict[str, Any]) -> dict[str, float | int]:
        """``lr``, ``weight_decay`` and ``batch_size`` of the cell with grid parameters ``params``."""
        return {"lr": params["lr"], self.row_param: params[self.row_param], self.fixed_param: self.fixed_value}

    def domains(self) -> dict[str, list]:
        """Every value each hyper-parameter takes in this table (TensorBoard's HPARAMS filters)."""
        return {**self.search_space(), self.fixed_param: [self.fixed_value]}


def build_tables(learning_rates: tuple, weight_decays: tuple, batch_sizes: tuple) -> dict[str, GridTable]:
    return {
        "1": GridTable("table1", "Table 1", "weight_decay", weight_decays, learning_rates,
                       "batch_size", TABLE1_BATCH_SIZE),
        "2": GridTable("table2", "Table 2", "batch_size", batch_sizes, learning_rates,
                       "weight_decay", TABLE2_WEIGHT_DECAY),
    }


def cell_name(hyperparameters: dict[str, float | int]) -> str:
    """The folder of a cell's curves, e.g. ``lr0.1_wd0.001_bs64``."""
    return f"lr{hyperparameters['lr']}_wd{hyperparameters['weight_decay']}_bs{hyperparameters['batch_size']}"


@dataclasses.dataclass(frozen=True)
class GridSettings:
    """Everything a worker process needs (sent to it pickled)."""

    tables: tuple[GridTable, ...]
    study_names: tuple[str, ...]
    storage: str
    out: str
    epochs: int
    seed: int
    dry_run: bool
    arch: str
    stem: str
    device: str
    threads: int | None


def study_name(table: GridTable, settings: dict[str, Any]) -> str:
    """``table1-e3-n1000-s0-<hash>``: readable, and different whenever a setting that changes results does."""
    digest = hashlib.sha1(json.dumps([dataclasses.asdict(table), settings], sort_keys=True).encode()).hexdigest()[:8]
    return f"{table.key}-e{settings['epochs']}-n{settings['train_images']}-s{settings['seed']}-{digest}"


# --------------------------------------------------------------------------- one cell
def worse_than_guessing(train_loss: float, num_classes: int = 10) -> bool:
    """Whether a mean training loss is above a uniform guess's, ln(num_classes).

    Batch norm often keeps a too-large learning rate from overflowing: the loss then stays high instead
    of turning NaN, and the model fits its own training images worse than guessing.
    """
    return train_loss > math.log(num_classes)


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def train_cell(params: dict[str, Any], table: GridTable, settings: GridSettings, data: MnistData) -> CellOutcome:
    """Train the cell of ``table`` with grid parameters ``params``; the value is the test accuracy in [0, 1]."""
    # BEGIN SOLUTION
    hyperparameters = table.hyperparameters(params)
    name = cell_name(hyperparameters)
    # This worker owns the cell: curves left by an interrupted earlier attempt would overlap the new ones.
    shutil.rmtree(Path(settings.out) / table.key / name, ignore_errors=True)

    seed_everything(settings.seed)  # every cell starts from the same weights: only the hyper-parameters differ
    device = data.train_images.device
    model = build_model(settings.arch, settings.stem).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=hyperparameters["lr"], momentum=MOMENTUM,
                                weight_decay=hyperparameters["weight_decay"])
    logger = RunLogger(settings.out, table.key, name, {**hyperparameters, "momentum": MOMENTUM,
                                                        "epochs": settings.epochs, "seed": settings.seed})
    max_batches = DRY_RUN_BATCHES if settings.dry_run else None
    print(f"{table.key} {name}: training", flush=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    loaders = mnist_loaders(data, int(hyperparameters["batch_size"]), seed=settings.seed, max_batches=max_batches)
    divergence = None
    for epoch in range(1, settings.epochs + 1):
        train_loss, train_accuracy = train(model, device, loaders.train, optimizer)
        test_loss, test_accuracy = test(model, device, loaders.test)
        metrics = {"Loss/train": train_loss, "Accuracy/train": train_accuracy,
                   "Loss/test": test_loss, "Accuracy/test": test_accuracy}
        logger.log_epoch(epoch, metrics)
        if not math.isfinite(train_loss):
            divergence = f"training loss became {train_loss} in epoch {epoch}"
            break
    # The last update can blow the weights up after the last loss was read: the test loss shows it.
    if divergence is None and not math.isfinite(metrics["Loss/test"]):
        divergence = "non-finite test loss"
    elif divergence is None and worse_than_guessing(metrics["Loss/train"]) and not settings.dry_run:
        divergence = f"last-epoch training loss {metrics['Loss/train']:.2f} > ln 10"  # 2 batches cannot tell
    diverged = divergence is not None
    if diverged:
        print(f"{table.key} {name}: diverged ({divergence})", flush=True)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    accuracy = metrics["Accuracy/test"]
    status = "diverged" if diverged else "ok"
    logger.save(status=status, divergence=divergence, train_seconds=seconds, data=data.source)
    # run_name "." keeps the hyper-parameters in the cell's own folder, so HPARAMS links them to its curves.
    logger.writer.add_hparams(hyperparameters,
                              {"hparam/test_accuracy": accuracy, "hparam/diverged": float(diverged)},
                              hparam_domain_discrete=table.domains(), run_name=".")
    logger.close()
    return CellOutcome(value=accuracy, diverged=diverged, attrs={
        "divergence": divergence,
        "test_accuracy": accuracy,
        "test_loss": finite_or_none(metrics["Loss/test"]),
        "train_loss": finite_or_none(metrics.get("Loss/train", math.nan)),
        "epochs_done": len(logger.history),
        "train_seconds": seconds,
        "cpu_seconds": cpu_seconds,  # on a machine shared with other jobs, a steadier guide than the wall time
        "run_dir": str(logger.directory),
    })
    # END SOLUTION


# --------------------------------------------------------------------------- workers
def run_worker(settings: GridSettings, data: MnistData, train: Callable[..., CellOutcome] = train_cell) -> int:
    """Train cells of every table in turn until none is left to start; returns how many this worker trained.

    ``data`` is the grid's data (training subset already drawn) on the CPU; it moves to the worker's device.
    """
    warnings.filterwarnings("ignore", module="optuna")  # heartbeats are "experimental", every trial would say so
    configure_cpu_threads(settings.threads)
    data = data.to(resolve_device(settings.device))
    storage = open_storage(settings.storage)
    trained = 0
    for table, name in zip(settings.tables, settings.study_names):
        grid = GridStudy(storage, name, table.search_space())
        trained += grid.run(lambda params, table=table: train(params, table, settings, data))
    return trained


def worker_process(settings: GridSettings, data: MnistData, log_path: str) -> None:
    """Entry point of a worker process: everything it prints goes to its log, the console keeps the bar."""
    with open(log_path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        trained = run_worker(settings, data)
        print(f"worker {os.getpid()}: trained {trained} cell(s)", flush=True)


def threads_per_worker(device: torch.device, workers: int) -> int | None:
    """CPU threads of each of ``workers`` processes: the cores split evenly (None: a GPU does the work)."""
    if device.type != "cpu":
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus // workers)


# --------------------------------------------------------------------------- tables and results
def collect_cells(grid: GridStudy, table: GridTable) -> dict[tuple, tuple[TableCell, Any]]:
    """(row value, lr) -> (table cell, trial) for every cell a trial holds and has parameters for."""
    cells = {}
    for trial in grid.owners().values():
        if set(trial.params) != set(grid.search_space):  # queued, or its parameters are being suggested
            continue
        status = trial.user_attrs.get("status", "running")
        if trial.state == TrialState.FAIL:
            status = "failed"
        value = trial.value if status in ("ok", "diverged") else None
        cells[(trial.params[table.row_param], trial.params["lr"])] = (TableCell(status, value), trial)
    return cells


def caption(table: GridTable, settings: GridSettings, train_images: int, source: str) -> str:
    rows = {"weight_decay": "weight decay", "batch_size": "batch size"}[table.row_param]
    fixed = {"weight_decay": "weight decay", "batch_size": "batch size"}[table.fixed_param]
    return (f"{table.title}: test accuracy (%) of ResNet-18 ({settings.stem} stem), rows {rows}, columns "
            f"learning rate λ, {fixed} {table.fixed_value}; SGD momentum {MOMENTUM}, {settings.epochs} "
            f"epoch(s) on {train_images:,} training images ({source}). Best in **bold**; "
            f"\"(diverged)\": the training loss became NaN/inf or ended above ln 10, a uniform guess's "
            f"(accuracy of the model as it stopped).")


def field_label(value: float | int) -> str:
    """A grid value inside a report field name: no dots (``str.format`` reads them as attributes)."""
    return str(value).replace(".", "_")


def write_outputs(grids: dict[str, GridStudy], settings: GridSettings, data: MnistData,
                  wall_seconds: float) -> dict[str, Any]:
    """Write ``<table>.csv``, ``<table>.md`` and ``results.json`` under ``settings.out``; return the results.

    ``wall_seconds`` is this run's time; ``results.json`` adds it to the time of the earlier runs of the
    same studies, so a resumed grid reports the time all its runs took.
    """
    # BEGIN SOLUTION
    train_images, source = len(data.train_labels), data.source
    out = Path(settings.out)
    previous_path = out / "results.json"
    if previous_path.is_file():
        previous = json.loads(previous_path.read_text())
        if [table.get("study") for table in previous.get("tables", {}).values()] == list(settings.study_names):
            wall_seconds += previous.get("wall_seconds", 0.0)
    results: dict[str, Any] = {
        "settings": {"epochs": settings.epochs, "train_images": train_images, "seed": settings.seed,
                     "arch": settings.arch, "stem": settings.stem, "momentum": MOMENTUM, "data": source,
                     "dry_run": settings.dry_run, "storage": settings.storage},
        "wall_seconds": wall_seconds,
        "tables": {},
    }
    fields: dict[str, str] = {"epochs": str(settings.epochs), "train_images": f"{train_images:,}",
                              "wall_minutes": f"{wall_seconds / 60:.1f}"}
    for table, name in zip(settings.tables, settings.study_names):
        cells = collect_cells(grids[table.key], table)
        table_cells = {key: cell for key, (cell, _) in cells.items()}
        corner = f"{table.row_param} \\ lr"
        write_text_atomic(out / f"{table.key}.csv",
                          format_grid_csv(corner, table.row_values, table.learning_rates, table_cells))
        markdown = format_grid_markdown(corner.replace("_", " ").replace("lr", "λ"), table.row_values,
                                        table.learning_rates, table_cells,
                                        caption(table, settings, train_images, source))
        write_text_atomic(out / f"{table.key}.md", markdown)
        print("\n" + markdown)

        best = sorted(best_cells(table_cells))
        short = table.key.replace("table", "t")
        row_short = {"weight_decay": "wd", "batch_size": "bs"}[table.row_param]
        entries = []
        for (row, lr), (cell, trial) in sorted(cells.items()):
            entries.append({table.row_param: row, "lr": lr, "status": cell.status, "test_accuracy": cell.value,
                            "train_seconds": trial.user_attrs.get("train_seconds"),
                            "cpu_seconds": trial.user_attrs.get("cpu_seconds"),
                            "error": trial.user_attrs.get("error"), "trial": trial.number})
        for row in table.row_values:
            for lr in table.learning_rates:
                field = f"{short}_{row_short}{field_label(row)}_lr{field_label(lr)}"
                fields[field] = cell_text(table_cells.get((row, lr)))
        diverged = [entry for entry in entries if entry["status"] == "diverged"]
        results["tables"][table.key] = {
            "study": name, "row_param": table.row_param, "rows": list(table.row_values),
            "learning_rates": list(table.learning_rates), "fixed": {table.fixed_param: table.fixed_value},
            "complete": grids[table.key].is_complete(), "cells": entries,
            "best": [{table.row_param: row, "lr": lr, "test_accuracy": table_cells[(row, lr)].value}
                     for row, lr in best],
            "train_seconds": sum(entry["train_seconds"] or 0.0 for entry in entries),
        }
        if best:
            row, lr = best[0]
            fields[f"{short}_best_accuracy"] = cell_text(table_cells[(row, lr)])
            fields[f"{short}_best_lr"] = str(lr)
            fields[f"{short}_best_{row_short}"] = str(row)
        fields[f"{short}_diverged_count"] = str(len(diverged))
        for batch_size in table.row_values if table.row_param == "batch_size" else ():
            updates = settings.epochs * -(-train_images // batch_size)
            fields[f"{short}_bs{batch_size}_updates"] = str(updates)
            # Share of batch norm's initial statistics (mean 0, variance 1) left in its running averages
            # after that many updates, at PyTorch's default momentum 0.1.
            fields[f"{short}_bs{batch_size}_bn_start_share"] = f"{100 * 0.9 ** updates:.1f}"
        fields[f"{short}_cell_minutes"] = f"{results['tables'][table.key]['train_seconds'] / 60:.1f}"
    results["report_fields"] = fields
    write_json_atomic(out / "results.json", results)
    return results
    # END SOLUTION


def watch_progress(grids: dict[str, GridStudy], settings: GridSettings,
                   processes: list[multiprocessing.Process]) -> None:
    """A bar over the cells of every table with the best accuracy so far, until the workers exit."""
    from tqdm import tqdm

    def finished() -> dict[tuple[str, tuple], tuple[TableCell, Any]]:
        done = {}
        for table in settings.tables:
            for key, (cell, trial) in collect_cells(grids[table.key], table).items():
                if cell.status != "running":
                    done[(table.key, key)] = (cell, trial)
        return done

    tables = {table.key: table for table in settings.tables}
    total = sum(grid.size for grid in grids.values())
    seen = finished()
    bar = tqdm(total=total, initial=len(seen), desc="cells", unit="cell", disable=progress_disabled())
    while True:
        alive = any(process.is_alive() for process in processes)
        current = finished()
        for (table_key, (row, lr)), (cell, trial) in sorted(current.items()):
            if (table_key, (row, lr)) not in seen:
                seconds = trial.user_attrs.get("train_seconds")
                timing = f" in {seconds:.0f} s" if seconds is not None else ""
                bar.write(f"{table_key} {tables[table_key].row_param}={row} lr={lr}: {cell_text(cell)}{timing}")
                bar.update(1)
        seen = current
        ok = [(cell.value, key) for key, (cell, _) in current.items() if cell.status == "ok"]
        if ok:
            value, (table_key, (row, lr)) = max(ok)
            bar.set_postfix_str(f"best {100 * value:.2f}% ({table_key} {tables[table_key].row_param}={row} lr={lr})")
        if not alive:
            break
        time.sleep(POLL_SECONDS)
    bar.close()


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="both", choices=["1", "2", "both"], help="which table (default both)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help=f"epochs per cell (default {DEFAULT_EPOCHS})")
    parser.add_argument("--train-size", type=int, default=DEFAULT_TRAIN_SIZE,
                        help=f"stratified training subset per cell, 0 for all (default {DEFAULT_TRAIN_SIZE}, a CPU's)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"worker processes on this machine (default {DEFAULT_WORKERS})")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage shared by every worker: an RDB URL (postgresql://user@host/db) for "
                             "several machines, or a journal file path (default <out>/optuna-journal.log)")
    parser.add_argument("--out", default=None,
                        help="tables, results and curves folder (default runs/grid, runs/grid-dry-run with --dry-run)")
    parser.add_argument("--arch", default="resnet18", choices=["resnet18"], help="network (default resnet18, Q4)")
    parser.add_argument("--stem", default="imagenet", choices=STEMS, help="input stem (default imagenet, as Q4)")
    parser.add_argument("--lrs", type=float, nargs="+", default=list(LEARNING_RATES),
                        help="learning rates, the columns of both tables (default the TP's 1.0 0.1 0.01 0.001)")
    parser.add_argument("--weight-decays", type=float, nargs="+", default=list(WEIGHT_DECAYS),
                        help="rows of Table 1 (default the TP's 0.1 0.01 0.001)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES),
                        help="rows of Table 2 (default the TP's 5 64 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: weights, batches, subset (default 0)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto picks CUDA when available")
    parser.add_argument("--dry-run", action="store_true",
                        help=f"{DRY_RUN_BATCHES} batches per cell, 1 epoch: checks the code path")
    add_mnist_arguments(parser)
    args = parser.parse_args(argv)
    for flag in ("epochs", "workers"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag} must be >= 1, got {getattr(args, flag)}")
    if args.train_size < 0:
        raise SystemExit(f"error: --train-size must be >= 0 (0 = all), got {args.train_size}")
    for flag in ("lrs", "weight_decays", "batch_sizes"):
        if min(getattr(args, flag)) <= 0:
            raise SystemExit(f"error: --{flag.replace('_', '-')} values must be > 0, got {getattr(args, flag)}")
    if args.dry_run:
        args.epochs = 1
    if args.out is None:  # a check of the code path must not overwrite the real tables
        args.out = "runs/grid-dry-run" if args.dry_run else "runs/grid"
    return args


@functools.lru_cache(maxsize=4)
def load_grid_mnist(data_root: str | None, download: bool) -> MnistData:
    """MNIST on the CPU, parsed once per process (tests and repeated runs: the embedded CSV takes seconds)."""
    return mnist_from_args(argparse.Namespace(data_root=data_root, download=download))


def build_settings(args: argparse.Namespace) -> tuple[GridSettings, MnistData]:
    """The worker settings of parsed ``args`` and the grid's data (training subset drawn, on the CPU).

    The workers get the data from here, so MNIST is read once, not once per worker.
    """
    device = resolve_device(args.device)
    full = load_grid_mnist(args.data_root, args.download)
    data = full.subset_train(args.train_size or None, args.seed)
    if args.dry_run:  # a tiny evaluation too, as every --dry-run; strided, as the images are sorted by digit
        stride = max(1, len(data.test_labels) // DRY_RUN_TEST_IMAGES)
        data = MnistData(data.train_images, data.train_labels, data.test_images[::stride],
                         data.test_labels[::stride], data.source)
    all_tables = build_tables(tuple(args.lrs), tuple(args.weight_decays), tuple(args.batch_sizes))
    tables = tuple(all_tables.values()) if args.table == "both" else (all_tables[args.table],)
    identity = {"epochs": args.epochs, "train_images": len(data.train_labels), "seed": args.seed,
                "dry_run": args.dry_run, "arch": args.arch, "stem": args.stem, "momentum": MOMENTUM,
                "data": [len(full.train_labels), len(full.test_labels)]}
    settings = GridSettings(
        tables=tables, study_names=tuple(study_name(table, identity) for table in tables),
        storage=args.storage or str(Path(args.out) / "optuna-journal.log"), out=args.out, epochs=args.epochs,
        seed=args.seed, dry_run=args.dry_run, arch=args.arch, stem=args.stem, device=args.device,
        threads=threads_per_worker(device, args.workers),
    )
    return settings, data


def open_grids(settings: GridSettings) -> dict[str, GridStudy]:
    """Table key -> its study, created if absent (a bad ``--storage`` is a one-line error)."""
    try:
        storage = open_storage(settings.storage)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    return {table.key: GridStudy(storage, name, table.search_space())
            for table, name in zip(settings.tables, settings.study_names)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", module="optuna")
    settings, data = build_settings(args)
    grids = open_grids(settings)  # before any worker starts, so that workers only ever load the studies
    for grid in grids.values():
        grid.requeue_lost_cells()
    # No more workers than cells left to start: a finished grid re-run starts none.
    workers = min(args.workers, sum(grid.cells_to_start() for grid in grids.values()))
    settings = dataclasses.replace(settings, threads=threads_per_worker(resolve_device(args.device), max(workers, 1)))
    log_dir = Path(args.out) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"Grid: {sum(grid.size for grid in grids.values())} cells ({', '.join(settings.study_names)}), "
          f"{workers} worker(s) to start, storage {settings.storage}; worker logs in {log_dir}/; "
          f"curves: tensorboard --logdir {args.out}")

    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")  # CUDA and Optuna's threads do not survive a fork
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_paths = [log_dir / f"{stamp}-worker{index}.log" for index in range(workers)]
    processes = [context.Process(target=worker_process, args=(settings, data, str(path))) for path in log_paths]
    for process in processes:
        process.start()
    try:
        watch_progress(grids, settings, processes)
    except KeyboardInterrupt:
        print("\nInterrupted: the cells in flight are lost; re-run the same command to finish the grid.")
        for process in processes:  # a Ctrl-C reaches them too, a signal sent to this process alone does not
            process.terminate()
    finally:
        for process in processes:
            process.join()
    wall_seconds = time.perf_counter() - started
    for process, path in zip(processes, log_paths):
        if process.exitcode != 0:
            print(f"warning: a worker exited with code {process.exitcode}, see {path}")
    results = write_outputs(grids, settings, data, wall_seconds)
    incomplete = [key for key, table in results["tables"].items() if not table["complete"]]
    print(f"Wall time of this run {wall_seconds / 60:.1f} min; results: {Path(args.out) / 'results.json'}"
          + (f"; not finished: {', '.join(incomplete)} (running elsewhere or interrupted: re-run)" if incomplete
             else ""))
    return results


if __name__ == "__main__":
    main()
