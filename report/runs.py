"""What the scripts logged under ``runs/``: finding each script's runs, choosing one, reading its files.

Layout read (written by ``utils.training.RunLogger`` and the scripts): ``runs/<script>/<run>/`` holding
TensorBoard event files, ``metrics.json`` (``config``, ``history`` one row per epoch, ``final``),
``results.json``, other JSON files (``statistics.json``), CSV tables and PNG figures. A run stopped by a
NaN/infinite loss says so in ``metrics.json`` (``"status": "diverged"``, ``"diverged_epoch"``). A file that is
corrupt, truncated or not of a kind the report reads is named in one notice line and skipped: the
report is built from what remains.
"""

from __future__ import annotations

import json
import math
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

EVENT_FILE_PREFIX = "events.out.tfevents"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
FIGURE_SUFFIXES = {".png": PNG_SIGNATURE, ".jpg": JPEG_SIGNATURE, ".jpeg": JPEG_SIGNATURE}
# Written by RunLogger beside the event file; every other JSON of a run is read as plain data.
METRICS_FILE, RESULTS_FILE = "metrics.json", "results.json"
# What scripts keep in a run folder besides results (pair lists, logs, arrays): not read, not foreign.
SIDE_OUTPUT_SUFFIXES = {".txt", ".log", ".md", ".npy", ".npz", ".pt", ".pth"}

Series = tuple[list[float], list[float]]  # (steps, values) in step order


class Notices:
    """One line per file skipped or request not honoured, printed by the build and kept for its summary."""

    def __init__(self, echo: Callable[[str], None] | None = print):
        self.lines: list[str] = []
        self.echo = echo

    def add(self, line: str) -> None:
        if line not in self.lines:
            self.lines.append(line)
            if self.echo is not None:
                self.echo(f"notice: {line}")


# --------------------------------------------------------------------------- file checks
def check_event_file(path: Path) -> str | None:
    """Why a TensorBoard event file cannot be trusted, or ``None`` when its records are whole.

    Walks the TFRecord framing (8-byte length, masked CRC-32C of the length, payload, payload CRC):
    a foreign file fails on its first record, a truncated one ends inside a record.
    """
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    data = path.read_bytes()
    offset, records = 0, 0
    while offset < len(data):
        header = data[offset: offset + 12]
        if len(header) < 12:
            return f"truncated after {records} record(s)"
        length, length_crc = struct.unpack("<QI", header)
        if masked_crc32c(header[:8]) != length_crc:
            return "not a TensorBoard event file" if records == 0 else f"corrupt record after {records} record(s)"
        offset += 12 + length + 4
        if offset > len(data):
            return f"truncated after {records} record(s)"
        records += 1
    return None if records else "empty event file"


def read_event_scalars(paths: Iterable[Path]) -> dict[str, Series]:
    """Every scalar of the given event files, tag -> (steps, values), nothing down-sampled.

    Several files (a resumed run) are merged; a step logged twice keeps its most recent value.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    latest: dict[str, dict[int, tuple[float, float]]] = {}
    for path in paths:
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            steps = latest.setdefault(tag, {})
            for event in accumulator.Scalars(tag):
                if event.step not in steps or event.wall_time >= steps[event.step][0]:
                    steps[event.step] = (event.wall_time, event.value)
    return {tag: ([float(step) for step in sorted(steps)], [steps[step][1] for step in sorted(steps)])
            for tag, steps in latest.items()}


def read_json(path: Path, notices: Notices, shape: Callable[[Any], str | None] | None = None) -> Any | None:
    """The JSON content of ``path``, or ``None`` (with a notice) when it is unreadable or of the wrong shape."""
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        notices.add(f"skipped {path}: not valid JSON ({str(error).splitlines()[0]})")
        return None
    problem = shape(content) if shape is not None else None
    if problem:
        notices.add(f"skipped {path}: {problem}")
        return None
    return content


def metrics_shape(content: Any) -> str | None:
    if (not isinstance(content, dict) or not isinstance(content.get("history"), list)
            or not all(isinstance(row, dict) and "epoch" in row for row in content["history"])):
        return "not a metrics.json of RunLogger (expected an object with a 'history' list of epoch rows)"
    return None


def object_shape(content: Any) -> str | None:
    return None if isinstance(content, dict) else f"expected a JSON object, found {type(content).__name__}"


def figure_problem(path: Path) -> str | None:
    with path.open("rb") as handle:
        head = handle.read(8)
    signature = FIGURE_SUFFIXES[path.suffix.lower()]
    return None if head.startswith(signature) else f"not a {path.suffix.lower()[1:].upper()} image"


# --------------------------------------------------------------------------- one run
@dataclass
class Run:
    """One run folder ``runs/<script>/<name>/`` and the readable files in it.

    A sub-folder with files of its own (a lab that trains several methods logs each to
    ``<run>/<method>/``) is a child run, read the same way and kept apart: its curves are not merged.
    """

    script: str
    name: str
    directory: Path
    metrics: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    other_json: dict[str, Any] = field(default_factory=dict)  # file name -> content
    csv_files: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    event_files: list[Path] = field(default_factory=list)
    children: list["Run"] = field(default_factory=list)
    modified: float = 0.0  # newest modification time of a readable file, seconds since the epoch
    _scalars: dict[str, Series] | None = None

    @property
    def usable(self) -> bool:
        return bool(self.metrics or self.results or self.other_json or self.csv_files or self.figures
                    or self.event_files or self.children)

    @property
    def config(self) -> dict[str, Any]:
        for source in (self.metrics, self.results):
            if source and isinstance(source.get("config"), dict):
                return source["config"]
        return {}

    @property
    def dry_run(self) -> bool:
        """Whether the run was a ``--dry-run`` (a code check, not a result)."""
        flags = [self.config.get("dry_run"), (self.results or {}).get("dry_run")]
        return any(flag is True for flag in flags) or any(child.dry_run for child in self.children)

    @property
    def diverged_epoch(self) -> int | None:
        """The epoch whose loss became NaN/inf when the run stopped on it (``"status": "diverged"``), else None."""
        if (self.metrics or {}).get("status") != "diverged":
            return None
        epoch = self.metrics.get("diverged_epoch")
        return epoch if is_number(epoch) else 0

    @property
    def final(self) -> dict[str, Any]:
        return dict((self.metrics or {}).get("final") or {})

    @property
    def history(self) -> list[dict[str, Any]]:
        return list((self.metrics or {}).get("history") or [])

    @property
    def data_source(self) -> str:
        for value in ((self.metrics or {}).get("data"), (self.results or {}).get("data"),
                      (self.results or {}).get("data_root"),
                      self.config.get("data_root"), (self.other_json.get("statistics.json") or {}).get("data_root")):
            if isinstance(value, str) and value:
                return value
        return ""

    @property
    def finished(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.modified))

    def scalars(self) -> dict[str, Series]:
        """TensorBoard scalars of the run (tag -> (steps, values)); empty without event files."""
        if self._scalars is None:
            self._scalars = read_event_scalars(self.event_files) if self.event_files else {}
        return self._scalars

    def epoch_series(self, tag: str) -> Series | None:
        """A per-epoch curve (x = epoch): from TensorBoard when the run has event files, else ``metrics.json``."""
        scalars = self.scalars()
        if tag in scalars:
            return scalars[tag]
        steps = [float(row["epoch"]) for row in self.history if is_number(row.get(tag))]
        values = [float(row[tag]) for row in self.history if is_number(row.get(tag))]
        return (steps, values) if steps else None

    def epoch_tags(self) -> list[str]:
        """Tags logged once per epoch (the ``metrics.json`` columns, or the events' non-``_step`` tags)."""
        tags = {key for row in self.history for key, value in row.items() if key != "epoch" and is_number(value)}
        tags |= {tag for tag in self.scalars() if not tag.endswith("_step") and not tag.startswith("hparam")}
        return sorted(tags)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)


def load_run(script: str, directory: Path, notices: Notices) -> Run:
    """Read every file of a run folder, and its sub-folders as child runs."""
    run = Run(script, directory.name, directory)
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            continue  # temp files of an atomic write in progress, editor files
        if path.is_dir():
            child = load_run(script, path, notices)
            if child.usable:
                run.children.append(child)
                run.modified = max(run.modified, child.modified)
            continue
        readable = True
        if path.name.startswith(EVENT_FILE_PREFIX):
            problem = check_event_file(path)
            if problem:
                notices.add(f"skipped {path}: {problem}")
                readable = False
            else:
                run.event_files.append(path)
        elif path.suffix.lower() == ".json":
            if path.name == METRICS_FILE:
                run.metrics = read_json(path, notices, metrics_shape)
                readable = run.metrics is not None
            elif path.name == RESULTS_FILE:
                run.results = read_json(path, notices, object_shape)
                readable = run.results is not None
            else:
                content = read_json(path, notices)
                readable = content is not None
                if readable:
                    run.other_json[path.name] = content
        elif path.suffix.lower() in FIGURE_SUFFIXES:
            problem = figure_problem(path)
            if problem:
                notices.add(f"skipped {path}: {problem}")
                readable = False
            else:
                run.figures.append(path)
        elif path.suffix.lower() == ".csv":
            run.csv_files.append(path)
        elif path.suffix.lower() in SIDE_OUTPUT_SUFFIXES:
            continue
        else:
            notices.add(f"skipped {path}: not a file the report reads (events, JSON, CSV, PNG, JPEG)")
            readable = False
        if readable:
            run.modified = max(run.modified, path.stat().st_mtime)
    return run


# --------------------------------------------------------------------------- every run
class RunIndex:
    """The runs found under a ``runs/`` folder, and which one each section uses.

    Args:
        root: the ``runs/`` folder (need not exist: every section then says what to run).
        picks: ``--run`` values: ``NAME`` (the run of that name, for each script that has one) or
            ``SCRIPT/NAME``.
        raw_folders: script folders with their own layout (the grid), read by their section only.
    """

    def __init__(self, root: Path, picks: Iterable[str] = (), raw_folders: Iterable[str] = (),
                 notices: Notices | None = None):
        self.root = Path(root)
        self.notices = notices or Notices()
        self.raw_folders = set(raw_folders)
        self.runs: dict[str, list[Run]] = {}  # script -> usable runs, oldest first
        self.used: dict[str, list[Run]] = {}  # section title -> the runs it shows
        self.picks = list(picks)
        self._scan()
        self._check_picks()

    def _scan(self) -> None:
        if not self.root.is_dir():
            if self.root.exists():
                self.notices.add(f"skipped {self.root}: expected a folder of runs")
            return
        for script_dir in sorted(self.root.iterdir()):
            if script_dir.name.startswith("."):
                continue
            if not script_dir.is_dir():
                self.notices.add(f"skipped {script_dir}: expected a folder per script (runs/<script>/<run>/)")
                continue
            if script_dir.name in self.raw_folders:
                continue
            runs = []
            for run_dir in sorted(script_dir.iterdir()):
                if run_dir.name.startswith("."):
                    continue
                if not run_dir.is_dir():
                    self.notices.add(f"skipped {run_dir}: expected a run folder (runs/<script>/<run>/)")
                    continue
                known_problems = len(self.notices.lines)
                run = load_run(script_dir.name, run_dir, self.notices)
                if run.usable:
                    runs.append(run)
                elif len(self.notices.lines) == known_problems:  # else its bad files are already named
                    self.notices.add(f"skipped {run_dir}: no readable result in this run folder")
            runs.sort(key=lambda run: (run.modified, run.name))
            self.runs[script_dir.name] = runs

    def _check_picks(self) -> None:
        for pick in self.picks:
            script, _, name = pick.rpartition("/")
            if script:
                found = any(run.name == name for run in self.runs.get(script, []))
            else:
                found = any(run.name == name for runs in self.runs.values() for run in runs)
            if not found:
                self.notices.add(f"--run {pick}: no such run under {self.root}; the latest runs are used")

    def scripts(self) -> list[str]:
        return sorted(self.runs)

    def candidates(self, script: str, where: Callable[[Run], bool] | None = None) -> list[Run]:
        """The script's readable runs that ``where`` accepts, oldest first."""
        return [run for run in self.runs.get(script, []) if where is None or where(run)]

    def select(self, script: str, where: Callable[[Run], bool] | None = None) -> Run | None:
        """The run a section shows: the one ``--run`` names, else the latest (by its newest file)."""
        runs = self.candidates(script, where)
        for pick in reversed(self.picks):
            pick_script, _, name = pick.rpartition("/")
            if pick_script in ("", script):
                for run in runs:
                    if run.name == name:
                        return run
        return runs[-1] if runs else None

    def mark_used(self, section: str, run: Run) -> None:
        if run not in self.used.setdefault(section, []):
            self.used[section].append(run)
