"""The report's sections: a registry of what each question shows, where it reads it and what produces it.

A :class:`Section` names the ``runs/`` sub-folders it reads, the exact commands that produce them, its
answer file in ``report/answers/`` and a render function that turns the selected run into Markdown
(tables, figures). A missing result never fails the build: the section says so and gives the command.

Adding an optional lab is one entry in :data:`LABS`: ``lab_section(key, script, title, *commands,
answers=())`` gives the generic rendering (the written answers filled from the run, run line, numbers of
``results.json`` and ``metrics.json``, curves of every logged per-epoch tag, every PNG of the run), and a lab with its own needs passes its own ``render`` to ``Section``. A
script folder under ``runs/`` that no section claims still gets the generic rendering under "Other runs".
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from report import figures
from report.runs import Notices, Run, RunIndex, Series, is_finite_number, is_number

GRID_FOLDER = "grid"
DRY_RUN_WARNING = ("**dry run** (`--dry-run`: 2 batches, 1 epoch: it checks the code path, "
                   "its numbers are not results)")


# --------------------------------------------------------------------------- registry types
@dataclass(frozen=True)
class Command:
    """A command that produces a section's results; ``runs_flag`` points it at a non-default ``runs/``."""

    text: str
    runs_flag: str = "--runs-dir"
    runs_subfolder: str = ""

    def for_runs(self, runs_root: str | None) -> str:
        if runs_root is None or not self.runs_flag:
            return self.text
        target = f"{runs_root.rstrip('/')}/{self.runs_subfolder}" if self.runs_subfolder else runs_root
        return f"{self.text} {self.runs_flag} {target}"


@dataclass(frozen=True)
class Section:
    """One part of the report.

    Args:
        key: prefix of the section's figure files (``ex1_q2`` gives ``figures/ex1_q2_curves.png``).
        title: its heading.
        render: ``render(context, section) -> Markdown``; ``None`` means "nothing to show" (an optional
            lab that has not run is then only listed).
        scripts: the ``runs/`` sub-folders it reads (claimed: not shown again under "Other runs").
        commands: what produces its results, in order.
        answer: its written answer in ``report/answers/`` (shown before the results).
        answer_required: whether a missing answer is pointed out.
        code: the files that answer the question in code (named under the heading).
    """

    key: str
    title: str
    render: Callable[["BuildContext", "Section"], str | None]
    scripts: tuple[str, ...] = ()
    commands: tuple[Command, ...] = ()
    answer: str | None = None
    answer_required: bool = True
    code: tuple[str, ...] = ()


@dataclass(frozen=True)
class Chapter:
    title: str
    sections: tuple[Section, ...]


@dataclass
class BuildContext:
    """What render functions share: the runs, where figures go, the answers, the ``runs/`` to name."""

    index: RunIndex
    out_dir: Path
    answers_dir: Path
    runs_flag_value: str | None  # the --runs value to add to commands, None for the default runs/
    notices: Notices
    figures: list[Path] = field(default_factory=list)
    answers_used: set[str] = field(default_factory=set)

    @property
    def figures_dir(self) -> Path:
        return self.out_dir / "figures"

    def figure_path(self, name: str) -> Path:
        path = self.figures_dir / name
        self.figures.append(path)
        return path

    def image(self, path: Path, caption: str) -> str:
        """Markdown for a figure written under ``figures/`` (path relative to ``report.md``)."""
        return f"![{caption}]({path.relative_to(self.out_dir).as_posix()})\n\n*{caption}*\n"

    def copy_figure(self, source: Path, name: str, caption: str) -> str:
        target = self.figure_path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return self.image(target, caption)

    def commands_text(self, commands: Iterable[Command]) -> str:
        return " then ".join(f"`{command.for_runs(self.runs_flag_value)}`" for command in commands)

    def missing(self, what: str, *commands: Command) -> str:
        return f"> **Not run yet:** {what}. Produce it with {self.commands_text(commands)}.\n"

    def answer(self, name: str, required: bool = True) -> str:
        """The answer file's Markdown, headings moved under the section's level; a pointer when absent."""
        path = self.answers_dir / name
        self.answers_used.add(name)
        if not path.is_file():
            return f"> **Answer not written yet:** `report/answers/{name}`.\n" if required else ""
        return demote_headings(strip_comments(path.read_text(encoding="utf-8")), 3) + "\n"


# --------------------------------------------------------------------------- Markdown helpers
def strip_comments(text: str) -> str:
    """Remove HTML comments (notes to the report's authors, such as a placeholder list)."""
    return re.sub(r"<!--.*?-->\n?", "", text, flags=re.DOTALL)


def demote_headings(text: str, levels: int) -> str:
    """Add ``levels`` ``#`` to every ATX heading outside code fences (an answer's ``#`` becomes ``####``)."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if not in_fence and re.match(r"#{1,6} ", line):
            line = "#" * levels + line
        lines.append(line)
    return "\n".join(lines).strip() + "\n"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; ``|`` inside a cell is escaped."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def percent(value: Any) -> str:
    """A fraction in [0, 1] as a percentage with two decimals (``-`` when absent, ``NaN`` kept visible)."""
    if not is_number(value):
        return "-"
    return f"{100 * value:.2f}" if math.isfinite(value) else str(value)


def decimal(value: Any, digits: int = 4) -> str:
    if not is_number(value):
        return "-"
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def general(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not is_number(value):
        return str(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_line(run: Run) -> str:
    """Where a section's numbers come from: run folder, time, data; flags a dry run."""
    parts = [f"Run `{run.directory.as_posix()}` (last written {run.finished}"]
    epochs = max((row["epoch"] for row in run.history if is_number(row.get("epoch"))), default=None)
    if epochs is not None:
        parts.append(f", {epochs} epoch(s)")
    if run.data_source:
        parts.append(f", data: {run.data_source}")
    line = "".join(parts) + ")."
    if run.dry_run:
        line += f" This is a {DRY_RUN_WARNING}."
    if run.diverged_epoch is not None:
        line += f" {diverged_warning(run)}."
    return line + "\n"


def diverged_warning(run: Run) -> str:
    """What the report says of a run stopped by a NaN/infinite loss."""
    epoch = f" in epoch {run.diverged_epoch}" if run.diverged_epoch else ""
    return (f"**This run diverged** (a loss became NaN or infinite{epoch} and the run stopped): its numbers are "
            f"not results")


def flatten_numbers(content: Any, prefix: str = "", skip: Sequence[str] = ("config",)) -> list[tuple[str, Any]]:
    """``(dotted key, number)`` for every number in nested objects (lists and ``skip`` keys left out)."""
    items: list[tuple[str, Any]] = []
    if isinstance(content, dict):
        for key, value in content.items():
            if key in skip:
                continue
            name = f"{prefix}.{key}" if prefix else str(key)
            if is_number(value):
                items.append((name, value))
            elif isinstance(value, dict):
                items += flatten_numbers(value, name, skip)
    return items


# --------------------------------------------------------------------------- shared rendering
def series_of(run: Run, tags: Iterable[str]) -> dict[str, Series]:
    curves = {}
    for tag in tags:
        series = run.epoch_series(tag)
        if series is not None:
            curves[tag] = series
    return curves


def final_value(run: Run, tag: str) -> Any:
    """The run's last value of ``tag``: ``metrics.json``'s ``final``, else the last logged point."""
    if tag in run.final:
        return run.final[tag]
    series = run.epoch_series(tag)
    return series[1][-1] if series else None


def classification_figure(ctx: BuildContext, section: Section, run: Run, title: str) -> str:
    """Train/validation/test loss and accuracy curves of a classification run (events first, else ``metrics.json``)."""
    tags = ("Loss/train", "Loss/val", "Loss/test", "Accuracy/train", "Accuracy/val", "Accuracy/test")
    curves = series_of(run, tags)
    if not curves:
        return "> The run logged no loss or accuracy curve.\n"
    iterations = run.scalars().get("Loss/train_step")
    epochs = max(curves["Loss/train"][0]) if "Loss/train" in curves else None
    per_epoch = max(iterations[0]) / epochs if iterations and epochs else None
    path = figures.plot_classification_curves(ctx.figure_path(f"{section.key}_curves.png"), title, curves,
                                              iterations, per_epoch)
    source = "TensorBoard events" if run.event_files else "metrics.json"
    return ctx.image(path, f"{title}: loss and accuracy per epoch (from {source})")


def named_value(name: str, value: Any) -> str:
    """Accuracies (fractions) in %, every other number with 4 significant digits."""
    return percent(value) if "accuracy" in name.lower() else general(value)


def named_header(name: str) -> str:
    return f"{name} (%)" if "accuracy" in name.lower() else name


def results_tables(results: dict[str, Any]) -> list[str]:
    """Markdown tables of a ``results.json``: a ``quantity | value`` table of its numbers, and a matrix
    (rows x quantities) for each entry that maps names to objects (e.g. ``methods: {ce: {...}, ...}``)."""
    values: list[tuple[str, Any]] = []
    tables = []
    for key, value in results.items():
        if key == "config":
            continue
        if is_number(value):
            values.append((key, value))
        elif isinstance(value, dict) and value and all(isinstance(inner, dict) for inner in value.values()):
            rows = {row: dict(flatten_numbers(inner)) for row, inner in value.items()}
            columns = list(dict.fromkeys(name for numbers in rows.values() for name in numbers))
            if columns:
                tables.append(table((key, *map(named_header, columns)),
                                    ((row, *(named_value(name, numbers.get(name)) for name in columns))
                                     for row, numbers in rows.items())))
        elif isinstance(value, dict):
            values += flatten_numbers(value, key)
    if values:
        tables.insert(0, table(("quantity", "value"), ((named_header(name), named_value(name, value))
                                                        for name, value in values)))
    return tables


def logged_curve_panels(runs: dict[str, Run]) -> list[tuple[str, str, dict[str, Series], bool]]:
    """Panels of every per-epoch curve of ``runs`` (label prefix -> run), one panel per tag group
    (``Loss``, ``Accuracy``, ...); time and per-step tags left out."""
    groups: dict[str, dict[str, Series]] = {}
    for prefix, run in runs.items():
        for tag in run.epoch_tags():
            if tag.startswith("Time/") or tag.endswith("/step"):
                continue
            series = run.epoch_series(tag)
            if series and len(series[0]) > 1:
                groups.setdefault(tag.split("/", 1)[0], {})[f"{prefix}: {tag}" if prefix else tag] = series
    return [(group, group, curves, group in ("Accuracy", "Eval")) for group, curves in sorted(groups.items())][:6]


def generic_run(ctx: BuildContext, key: str, run: Run, title: str, numbers: bool = True) -> str:
    """A reasonable rendering of any run: its numbers, per-epoch curves (its own and its child runs'),
    CSV tables and figures."""
    ctx.index.mark_used(title, run)
    parts = [run_line(run)]
    if numbers:
        parts += results_tables(run.results or {})
        if not run.results and run.final:
            parts += results_tables(run.final)
        for file_name, content in sorted(run.other_json.items()):
            if isinstance(content, dict):
                parts += [f"`{file_name}`:\n\n{text}" for text in results_tables(content)]
    panels = logged_curve_panels({"": run, **{child.name: child for child in run.children}})
    if panels:
        path = figures.plot_panels(ctx.figure_path(f"{key}_curves.png"), f"{title}: logged curves", panels)
        parts.append(ctx.image(path, f"{title}: every per-epoch curve the run logged"))
    for csv_path in run.csv_files:
        with csv_path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        if 1 < len(rows) <= 41:
            parts.append(f"`{csv_path.name}`:\n\n" + table(rows[0], rows[1:]))
    for figure in run.figures:
        parts.append(ctx.copy_figure(figure, f"{key}_{figure.stem}{figure.suffix.lower()}",
                                     f"{title}: {figure.stem.replace('_', ' ')}"))
    return "\n".join(parts)


def headline_numbers(run: Run) -> dict[str, Any]:
    """Top-level numbers of ``results.json`` (else the final epoch's), in the file's order."""
    source = run.results if run.results else run.final
    return {name: value for name, value in source.items() if is_number(value)}


def filled_answers(ctx: BuildContext, names: Sequence[str], fields: dict[str, str]) -> list[str]:
    """Answer files whose ``{placeholders}`` quote a run's figures, filled from ``fields`` (the run's
    ``results.json`` ``report_fields``); a figure the run lacks shows as **?** and is named in a notice."""
    parts = []
    for name in names:
        path = ctx.answers_dir / name
        ctx.answers_used.add(name)
        if not path.is_file():
            parts.append(f"> **Answer not written yet:** `report/answers/{name}`.\n")
            continue
        text, unknown = fill_placeholders(strip_comments(path.read_text(encoding="utf-8")), fields)
        if unknown:
            text, _ = fill_placeholders(text, {field: "**?**" for field in unknown})
            ctx.notices.add(f"report/answers/{name}: no value for {', '.join(sorted(set(unknown)))} in the run shown")
        parts.append(demote_headings(text, 3))
    return parts


def lab_section(key: str, script: str, title: str, *commands: str, answers: Sequence[str] = ()) -> Section:
    """An optional lab with the generic rendering of ``runs/<script>/``: its latest run, preceded by the lab's
    ``answers`` (files of ``report/answers/``) with their placeholders filled from that run's ``report_fields``.
    """
    def render(ctx: BuildContext, section: Section) -> str | None:
        run = ctx.index.select(script)
        if run is None:
            return None
        fields = {name: str(value) for name, value in ((run.results or {}).get("report_fields") or {}).items()}
        return "\n".join([*filled_answers(ctx, answers, fields), generic_run(ctx, key, run, title)])

    return Section(key, title, render, scripts=(script,), commands=tuple(Command(text) for text in commands))


# --------------------------------------------------------------------------- Exercise 1
Q1, Q2, Q3 = (Command("python exercise1/q1_numpy_mlp.py"), Command("python exercise1/q2_module_mlp.py"),
              Command("python exercise1/q3_summaries.py"))
Q4 = Command("python exercise1/q4_resnet.py")
GRID = Command("python exercise1/q5_grid_search.py", runs_flag="--out", runs_subfolder=GRID_FOLDER)
COMPARED_HYPERPARAMETERS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "seed")


def is_resnet18(run: Run) -> bool:
    return run.config.get("arch", "resnet18") == "resnet18"


def final_line(run: Run) -> str:
    validation = final_value(run, "Accuracy/val")
    validation = f", validation accuracy {percent(validation)} %" if is_number(validation) else ""
    return (f"Final epoch: train loss {decimal(final_value(run, 'Loss/train'))}, train accuracy "
            f"{percent(final_value(run, 'Accuracy/train'))} %{validation}, test loss "
            f"{decimal(final_value(run, 'Loss/test'))}, **test accuracy {percent(final_value(run, 'Accuracy/test'))} %**.\n")


def render_ex1_q1(ctx: BuildContext, section: Section) -> str:
    run = ctx.index.select("q1_numpy_mlp")
    if run is None:
        return ctx.missing("the NumPy MLP run", *section.commands)
    ctx.index.mark_used(section.title, run)
    return run_line(run) + "\n" + final_line(run) + "\nIts curves are compared with Q2's below.\n"


def render_ex1_q2(ctx: BuildContext, section: Section) -> str:
    module_run = ctx.index.select("q2_module_mlp")
    numpy_run = ctx.index.select("q1_numpy_mlp")
    if module_run is None:
        return ctx.missing("the nn.Module MLP run", *section.commands)
    ctx.index.mark_used(section.title, module_run)
    parts = [run_line(module_run), final_line(module_run),
             classification_figure(ctx, section, module_run, "Q2: nn.Module MLP")]
    parts.append("#### NumPy (Q1) against nn.Module (Q2)\n")
    if numpy_run is None:
        parts.append(ctx.missing("the NumPy run to compare with", Q1))
        return "\n".join(parts)
    ctx.index.mark_used(section.title, numpy_run)
    rows = []
    for tag, fmt in (("Loss/train", decimal), ("Accuracy/train", percent), ("Loss/test", decimal),
                     ("Accuracy/test", percent), ("Time/train_epoch_s", lambda v: decimal(v, 2))):
        numpy_value, module_value = final_value(numpy_run, tag), final_value(module_run, tag)
        gap = (fmt(module_value - numpy_value) if is_finite_number(numpy_value) and is_finite_number(module_value)
               else "-")
        unit = " (%)" if fmt is percent else ""
        rows.append((f"{tag}{unit}", fmt(numpy_value), fmt(module_value), gap))
    parts.append(table(("final value", "NumPy (Q1)", "nn.Module (Q2)", "Q2 − Q1"), rows))
    differing = [f"{name} {numpy_run.config.get(name)} vs {module_run.config.get(name)}"
                 for name in COMPARED_HYPERPARAMETERS if numpy_run.config.get(name) != module_run.config.get(name)]
    parts.append("Hyper-parameters differ: " + "; ".join(differing) + ".\n" if differing else
                 "Same hyper-parameters (" + ", ".join(f"{name} {numpy_run.config.get(name)}"
                                                       for name in COMPARED_HYPERPARAMETERS) + ").\n")
    path = figures.plot_comparison(ctx.figure_path(f"{section.key}_numpy_vs_module.png"),
                                   "NumPy MLP (Q1) vs nn.Module MLP (Q2)",
                                   {"NumPy (Q1)": series_of(numpy_run, ("Loss/test", "Accuracy/test")),
                                    "nn.Module (Q2)": series_of(module_run, ("Loss/test", "Accuracy/test"))})
    parts.append(ctx.image(path, "Test loss and accuracy per epoch, NumPy (Q1) and nn.Module (Q2)"))
    return "\n".join(parts)


def render_ex1_q3(ctx: BuildContext, section: Section) -> str:
    run = ctx.index.select("q3_summaries")
    if run is None:
        return ctx.missing("the run with TensorBoard summaries", *section.commands)
    ctx.index.mark_used(section.title, run)
    parts = [run_line(run)]
    tags = sorted(run.scalars())
    if tags:
        parts.append("Tags in its TensorBoard event file: " + ", ".join(f"`{tag}`" for tag in tags) + ".\n")
    else:
        parts.append("> No readable TensorBoard event file in this run: curves from `metrics.json`.\n")
    parts += [final_line(run), classification_figure(ctx, section, run, "Q3: MLP with summaries")]
    return "\n".join(parts)


def render_ex1_q4(ctx: BuildContext, section: Section) -> str:
    run = ctx.index.select("q4_resnet", is_resnet18)
    if run is None:
        return ctx.missing("the ResNet-18 run", *section.commands)
    ctx.index.mark_used(section.title, run)
    config = run.config
    settings = ("stem", "epochs", "train_size", "batch_size", "lr", "weight_decay", "momentum", "shift",
                "zero_init_residual")
    setting = ", ".join(f"{name} {config[name]}" for name in settings if name in config)
    parts = [run_line(run), f"Settings: {setting}.\n" if setting else "", final_line(run),
             classification_figure(ctx, section, run, "Q4: ResNet-18")]
    return "\n".join(part for part in parts if part)


def render_ex1_summary(ctx: BuildContext, section: Section) -> str:
    rows = []
    for question, script, where, command in (("Q1 NumPy MLP", "q1_numpy_mlp", None, Q1),
                                             ("Q2 nn.Module MLP", "q2_module_mlp", None, Q2),
                                             ("Q3 MLP + summaries", "q3_summaries", None, Q3),
                                             ("Q4 ResNet-18", "q4_resnet", is_resnet18, Q4)):
        run = ctx.index.select(script, where)
        if run is None:
            rows.append((question, f"not run: `{command.for_runs(ctx.runs_flag_value)}`", "-", "-", "-", "-", "-"))
            continue
        epochs = max((row["epoch"] for row in run.history), default="-")
        name = f"`{run.name}`" + (" (dry run)" if run.dry_run else "") + (
            " (diverged)" if run.diverged_epoch is not None else "")
        rows.append((question, name, epochs, percent(final_value(run, "Accuracy/train")),
                     percent(final_value(run, "Accuracy/test")), decimal(final_value(run, "Loss/test")),
                     decimal(final_value(run, "Time/train_epoch_s"), 2)))
    return table(("question", "run", "epochs", "train accuracy (%)", "test accuracy (%)", "test loss",
                  "s / epoch"), rows)


# ----------------------------------------------------------------------------- Q5: the grid
# The third hyper-parameter each table fixes, when results.json does not say (the TP's values).
TP_FIXED = {"table1": {"batch_size": 64}, "table2": {"weight_decay": 0.001}}
CHANCE_LEVEL = 0.2  # twice a uniform guess's accuracy on 10 digits
FLAT_POINTS = 0.5  # a change of less than half a point of accuracy is reported as flat


@dataclass
class GridTableData:
    """One table read back from ``table<N>.csv``: cell texts as the grid wrote them, parsed."""

    key: str
    corner: str
    rows: list[str]
    columns: list[str]
    texts: dict[tuple[str, str], str]

    @property
    def row_param(self) -> str:
        return "batch_size" if self.corner.startswith("batch") else "weight_decay"

    @property
    def row_name(self) -> str:
        return self.row_param.replace("_", " ")

    def status(self, cell: tuple[str, str]) -> tuple[str, float | None]:
        """``(status, accuracy in [0, 1])`` of a cell text: ``98.20``, ``11.35 (diverged)``, ``failed``, ``-``."""
        text = self.texts.get(cell, "-").strip()
        match = re.fullmatch(r"(-?[0-9.]+|nan|inf)( \(diverged\))?", text)
        if match:
            return ("diverged" if match.group(2) else "ok"), float(match.group(1)) / 100
        return ("missing" if text in ("", "-") else text), None

    def accuracies(self) -> dict[tuple[str, str], float]:
        """The cells that show a finite accuracy (diverged ones included), in [0, 1]."""
        values = {}
        for cell in self.texts:
            status, value = self.status(cell)
            if status in ("ok", "diverged") and value is not None and math.isfinite(value):
                values[cell] = value
        return values

    def describe(self, cell: tuple[str, str]) -> str:
        """``λ = 1.0 with weight decay 0.1`` or ``λ = 1.0 with batch 5``."""
        row, column = cell
        return f"λ = {column} with {'batch' if self.row_param == 'batch_size' else 'weight decay'} {row}"


def read_grid_table(path: Path, notices: Notices) -> GridTableData | None:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        notices.add(f"skipped {path}: unreadable ({error})")
        return None
    if len(rows) < 2 or len(rows[0]) < 2 or any(len(row) != len(rows[0]) for row in rows):
        notices.add(f"skipped {path}: not a grid table (expected a header 'rows \\ lr,<λ values>' and equal rows)")
        return None
    columns = rows[0][1:]
    texts = {(row[0], column): text for row in rows[1:] for column, text in zip(columns, row[1:])}
    return GridTableData(path.stem, rows[0][0], [row[0] for row in rows[1:]], columns, texts)


def read_grid_results(path: Path, notices: Notices) -> dict[str, Any]:
    """The grid's ``results.json`` (settings, every cell, each table's best), or ``{}`` (named when unreadable)."""
    if not path.is_file():
        return {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        notices.add(f"skipped {path}: not valid JSON ({str(error).splitlines()[0]})")
        return {}
    if not isinstance(loaded, dict):
        notices.add(f"skipped {path}: expected a JSON object")
        return {}
    return loaded


def same_number(text: str, value: Any) -> bool:
    try:
        return math.isclose(float(text), float(value), rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


def grid_best(data: GridTableData, results: dict[str, Any]) -> tuple[tuple[str, str], dict[str, Any]] | None:
    """The table's best cell as ``results.json`` names it (chosen on validation by the grid) and its entry."""
    best = ((results.get("tables") or {}).get(data.key) or {}).get("best")
    if not isinstance(best, dict):
        return None
    for cell in data.texts:
        if same_number(cell[0], best.get(data.row_param)) and same_number(cell[1], best.get("lr")):
            return cell, best
    return None


def grid_markdown(data: GridTableData, caption: str, best: tuple[str, str] | None) -> str:
    """The table in the TP's layout (rows the table's parameter, columns λ) via ``utils.grid``'s formatter."""
    from utils.grid import TableCell, format_grid_markdown

    cells = {}
    for key in data.texts:
        status, value = data.status(key)
        if status != "missing":
            cells[key] = TableCell(status, value)
    corner = data.corner.replace("_", " ").replace("lr", "λ")
    return format_grid_markdown(corner, data.rows, data.columns, cells, [best] if best else [], caption)


def sorted_numerically(values: Iterable[str]) -> list[str]:
    return sorted(values, key=lambda text: (0, float(text), "") if is_float_text(text) else (1, 0.0, text))


def is_float_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def lr_ranking(data: GridTableData) -> str:
    """The learning rates by mean accuracy over the rows: ``λ = 0.1 (97.95 %) > λ = 0.01 (97.10 %) > ...``."""
    values = data.accuracies()
    means = {column: sum(found) / len(found) for column in data.columns
             for found in [[values[(row, column)] for row in data.rows if (row, column) in values]] if found}
    ranked = sorted(means, key=lambda column: -means[column])
    return " > ".join(f"λ = {column} ({100 * means[column]:.2f} %)" for column in ranked) or "no result"


def spread(values: Sequence[float]) -> float:
    return 100 * (max(values) - min(values)) if len(values) > 1 else 0.0


def main_factor(data: GridTableData, title: str) -> str:
    """Which of λ and the table's row parameter moves the accuracy more, on average (points of accuracy)."""
    values = data.accuracies()
    across = [spread([values[(row, column)] for column in data.columns if (row, column) in values])
              for row in data.rows]
    down = [spread([values[(row, column)] for row in data.rows if (row, column) in values]) for column in data.columns]
    across, down = sum(across) / len(across), sum(down) / len(down)
    verdict = ("λ matters more" if across > down else f"the {data.row_name} matters more" if down > across
               else "they matter as much")
    return (f"In {title}, λ moves the accuracy by {across:.1f} points across a row on average, the {data.row_name} "
            f"by {down:.1f} points down a column: {verdict}.")


def row_effect(data: GridTableData) -> str:
    """For each λ, the accuracy as the row parameter grows, and whether it rises, falls or stays flat."""
    values = data.accuracies()
    rows = sorted_numerically(data.rows)
    parts = []
    for column in data.columns:
        present = [row for row in rows if (row, column) in values]
        if len(present) < 2:
            continue
        found = [values[(row, column)] for row in present]
        change = 100 * (found[-1] - found[0])
        if spread(found) < FLAT_POINTS:
            verdict = "flat"
        elif all(b >= a for a, b in zip(found, found[1:])):
            verdict = f"rises by {change:.1f} points"
        elif all(b <= a for a, b in zip(found, found[1:])):
            verdict = f"falls by {-change:.1f} points"
        else:
            verdict = f"not monotone (range {spread(found):.1f} points)"
        parts.append(f"λ = {column}: " + " → ".join(f"{100 * value:.2f}" for value in found)
                     + f" % ({data.row_name} " + " → ".join(present) + f"), {verdict}")
    return "; ".join(parts) or "no column with two results"


def best_lr_per_row(data: GridTableData, title: str) -> str:
    """The λ of highest test accuracy in each row (cells that did not diverge), and whether it depends on the row."""
    values = data.accuracies()
    best = {}
    for row in sorted_numerically(data.rows):
        ok = {column: values[(row, column)] for column in data.columns
              if (row, column) in values and data.status((row, column))[0] == "ok"}
        if ok:
            top = max(ok.values())
            best[row] = [column for column in data.columns if ok.get(column) == top]
    if not best:
        return ""
    listed = ", ".join(f"{' or '.join(columns)} ({data.row_name} {row})" for row, columns in best.items())
    same = len({tuple(columns) for columns in best.values()}) == 1
    verdict = "the same in every row" if same else f"it depends on the {data.row_name}"
    return f"In {title} the λ of highest test accuracy in each row is {listed}: {verdict}."


def cell_triple(data: GridTableData, cell: tuple[str, str], results: dict[str, Any]) -> tuple[float, float, float]:
    """``(lr, weight decay, batch size)`` of a table cell, the fixed one from ``results.json`` or the TP's."""
    fixed = ((results.get("tables") or {}).get(data.key) or {}).get("fixed") or TP_FIXED.get(data.key, {})
    values = {"lr": cell[1], data.row_param: cell[0], **fixed}
    try:
        return float(values["lr"]), float(values.get("weight_decay", "nan")), float(values.get("batch_size", "nan"))
    except ValueError:
        return math.nan, math.nan, math.nan


def distinct_cells(tables: Sequence[GridTableData], results: dict[str, Any], status: str,
                   below: float = math.inf) -> str:
    """The cells of ``status`` (under ``below`` accuracy) across the tables, a cell both share named once."""
    seen, named = set(), []
    for data in tables:
        for row in data.rows:
            for column in data.columns:
                found, value = data.status((row, column))
                triple = cell_triple(data, (row, column), results)
                if found == status and value is not None and value < below and triple not in seen:
                    seen.add(triple)
                    named.append(f"{data.describe((row, column))} ({100 * value:.2f} %)")
    return ", ".join(named) or "none"


def budget_fields(results: dict[str, Any]) -> dict[str, str]:
    """``budget`` (what every cell trained on), ``batch_budget`` (what it means for the batch sizes) and the
    data sizes, from ``results.json``."""
    settings = results.get("settings") if isinstance(results.get("settings"), dict) else {}
    cells = [cell for cell in results.get("cells") or [] if isinstance(cell, dict) and is_number(cell.get("images"))]
    fields = {name: count(settings[name]) for name in ("train_images", "val_images", "test_images", "probe_images")
              if is_number(settings.get(name))}
    per_batch = {cell["batch_size"]: cell for cell in sorted(cells, key=lambda cell: cell.get("batch_size", 0))}
    if is_number(settings.get("updates")):
        details = ", ".join(f"batch {size}: {count(cell['images'])} images" for size, cell in per_batch.items())
        fields["budget"] = f"{settings['updates']} SGD updates per cell" + (f" ({details})" if details else "")
        if len(per_batch) > 1:
            small, large = per_batch[min(per_batch)], per_batch[max(per_batch)]
            fields["batch_budget"] = (
                f"At an equal number of updates a larger batch averages each gradient over more images and sees "
                f"more of them: batch {large['batch_size']} sees {large['images'] / small['images']:.0f}× the images "
                f"of batch {small['batch_size']}.")
    elif is_number(settings.get("epochs")):
        details = ", ".join(f"batch {size}: {count(cell.get('updates'))} updates" for size, cell in per_batch.items())
        fields["budget"] = f"{settings['epochs']} epoch(s) per cell" + (f" ({details})" if details else "")
        if len(per_batch) > 1 and all(is_number(cell.get("updates")) and cell["updates"]
                                      for cell in per_batch.values()):
            small, large = per_batch[min(per_batch)], per_batch[max(per_batch)]
            fields["batch_budget"] = (
                f"At equal epochs a smaller batch makes more updates, each from fewer images: batch "
                f"{small['batch_size']} makes {small['updates'] / large['updates']:.0f}× the updates of batch "
                f"{large['batch_size']}.")
    return fields


def grid_fields(tables: Sequence[GridTableData], results: dict[str, Any]) -> dict[str, str]:
    """The figures and sentences the Q5 comment quotes, computed from the tables (and ``results.json``).

    Per table (``t1``, ``t2``): one field per cell (``t1_wd0_001_lr0_1``), ``t1_lr_ranking``, ``t1_factor``,
    ``t1_row_effect``, ``t1_best_lr_per_row``, ``t1_diverged_count``, ``t1_diverged_cells`` and, from
    ``results.json``, the best cell chosen on validation: ``t1_best`` (a sentence), ``t1_best_lr``, ``t1_best_wd`` (``t2_best_bs``),
    ``t1_best_accuracy`` (test, %), ``t1_best_val_accuracy``. Across the tables, each shared cell once:
    ``diverged_cells``, ``chance_cells`` (below 20 % without diverging). From ``results.json``: ``budget``,
    ``batch_budget``, ``train_images``, ``val_images``, ``test_images``, ``probe_images``.
    """
    fields = budget_fields(results)
    for data in tables:
        short = data.key.replace("table", "t")
        row_short = "bs" if data.row_param == "batch_size" else "wd"
        title = f"Table {data.key[-1]}"
        for row in data.rows:
            for column in data.columns:
                fields[f"{short}_{row_short}{row.replace('.', '_')}_lr{column.replace('.', '_')}"] = \
                    data.texts.get((row, column), "-")
        diverged = [cell for cell in data.texts if data.status(cell)[0] == "diverged"]
        fields[f"{short}_diverged_count"] = str(len(diverged))
        fields[f"{short}_diverged_cells"] = ", ".join(
            data.describe((row, column)) for row in data.rows for column in data.columns
            if (row, column) in diverged) or "none"
        if data.accuracies():
            fields.update({f"{short}_lr_ranking": lr_ranking(data), f"{short}_factor": main_factor(data, title),
                           f"{short}_row_effect": row_effect(data),
                           f"{short}_best_lr_per_row": best_lr_per_row(data, title) or f"{title} has no cell that "
                                                                                     f"trained without diverging."})
        best = grid_best(data, results)
        if best is not None:
            (row, column), entry = best
            fields.update({
                f"{short}_best_lr": column, f"{short}_best_{row_short}": row,
                f"{short}_best_accuracy": data.texts[(row, column)], f"{short}_best_val_accuracy": percent(
                    entry.get("val_accuracy")),
                f"{short}_best": (f"{data.describe((row, column))}: validation {percent(entry.get('val_accuracy'))} %, "
                                  f"test {data.texts[(row, column)]} %")})
    fields["diverged_cells"] = distinct_cells(tables, results, "diverged")
    fields["chance_cells"] = distinct_cells(tables, results, "ok", below=CHANCE_LEVEL)
    return fields


PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill_placeholders(text: str, fields: dict[str, str]) -> tuple[str, list[str]]:
    """Replace ``{name}`` by ``fields[name]``; returns the text and the names with no value (left as ``{name}``)."""
    unknown: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in fields:
            return fields[name]
        unknown.append(name)
        return match.group(0)

    return PLACEHOLDER.sub(replace, text), unknown


def render_ex1_q5(ctx: BuildContext, section: Section) -> str:
    grid_dir = ctx.index.root / GRID_FOLDER
    results = read_grid_results(grid_dir / "results.json", ctx.notices)
    settings = results.get("settings") if isinstance(results.get("settings"), dict) else {}
    parts, tables, missing = [], {}, []
    for number in ("1", "2"):
        path = grid_dir / f"table{number}.csv"
        data = read_grid_table(path, ctx.notices) if path.is_file() else None
        if data is None:
            missing.append(number)
            continue
        tables[number] = data
        best = grid_best(data, results)
        parts.append(grid_markdown(data, grid_caption(number, data, settings), best[0] if best else None))
        values = data.accuracies()
        diverged = {key for key in data.texts if data.status(key)[0] == "diverged"}
        row_label = "batch size" if data.row_param == "batch_size" else "weight decay"
        path = figures.plot_grid_table(ctx.figure_path(f"{section.key}_table{number}.png"),
                                       f"Table {number}", row_label, data.rows, data.columns, values, diverged)
        parts.append(ctx.image(path, f"Table {number} as curves: test accuracy against λ"))
    fields = grid_fields(list(tables.values()), results)
    if len(missing) == 2:
        parts.append(ctx.missing(f"the grid search (`{grid_dir.as_posix()}/table1.csv`, `table2.csv`)", GRID))
    elif missing:
        parts.append(ctx.missing(f"Table {missing[0]} (`{grid_dir.as_posix()}/table{missing[0]}.csv`)",
                                 Command(f"{GRID.text} --table {missing[0]}", GRID.runs_flag, GRID.runs_subfolder)))
    if tables:
        # The grid is one folder, not runs/<script>/<run>/: listed among the runs used through a Run view of it.
        csv_files = [grid_dir / f"{data.key}.csv" for data in tables.values()]
        ctx.index.mark_used(section.title, Run(
            GRID_FOLDER, grid_dir.name, grid_dir, results={"data": settings.get("data"),
                                                           "dry_run": bool(settings.get("dry_run"))},
            csv_files=csv_files, modified=max(path.stat().st_mtime for path in csv_files)))
        line = f"Grid read from `{grid_dir.as_posix()}`"
        if "budget" in fields:
            line += (f": {fields['budget']}, from {fields.get('train_images', '?')} training images "
                     f"({settings.get('data')})")
        line += "."
        if settings.get("dry_run"):
            line += f" This is a {DRY_RUN_WARNING}."
        if results and not results.get("complete", True):
            line += " **The grid is not finished** (failed or missing cells): re-run its command."
        parts.insert(0, line + "\n")
    # The comment quotes the tables: its {placeholders} are filled from them, never typed by hand.
    answer_path = ctx.answers_dir / (section.answer or "")
    if section.answer and answer_path.is_file():
        ctx.answers_used.add(section.answer)
        text, unknown = fill_placeholders(strip_comments(answer_path.read_text(encoding="utf-8")), fields)
        if unknown:
            text, _ = fill_placeholders(text, {name: "**?**" for name in unknown})
            if tables:
                ctx.notices.add(f"report/answers/{section.answer}: no value for {', '.join(sorted(set(unknown)))}")
        if unknown and not tables:
            parts.append("> The numbers marked **?** in the comment come from the grid, which has not run yet.\n")
        parts.append(demote_headings(text, 3))
    elif section.answer:
        parts.append(ctx.answer(section.answer))
    return "\n".join(parts)


def count(value: Any) -> str:
    """An integer with thousands separators (``1,000``), anything else as it is."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def grid_caption(number: str, data: GridTableData, settings: dict[str, Any]) -> str:
    rows = data.row_name
    fixed = "weight decay 0.001" if data.row_param == "batch_size" else "batch size 64"
    caption = f"**Table {number}**: test accuracy (%), rows {rows}, columns learning rate λ, {fixed}"
    if is_number(settings.get("updates")):
        caption += f"; {settings['updates']} SGD updates per cell"
    elif is_number(settings.get("epochs")):
        caption += f"; {settings['epochs']} epoch(s) per cell on {count(settings.get('train_images'))} training images"
    return (caption + ". **Bold**: the best cell, chosen on the validation split; *(diverged)*: the training loss "
            "became NaN/inf or ended above its start.")


# --------------------------------------------------------------------------- Exercise 2
DATASET = Command("python exercise2/q1_plot_dataset.py")
MAIN = Command("python main.py")
EVALUATE = Command("python evaluation_tp.py")
RAW_PIXELS = Command("python evaluation_tp.py --raw-pixels")
RANKS = (("rank1", "rank-1"), ("rank5", "rank-5"), ("rank10", "rank-10"), ("mAP", "mAP"))
STATISTIC_COLUMNS = ("identities", "images", "cameras", "distractors", "junk")


def is_network_evaluation(run: Run) -> bool:
    return run.results is not None and not run.results.get("raw_pixels")


def is_raw_pixel_evaluation(run: Run) -> bool:
    return run.results is not None and bool(run.results.get("raw_pixels"))


def render_answer_only(ctx: BuildContext, section: Section) -> str:
    return ""


def dataset_of(run: Run) -> str:
    """Which Market-1501 a run used, as the scripts name it (``synthetic Market-1501`` or ``Market-1501``)."""
    for source in (run.results, run.config, run.other_json.get("statistics.json")):
        if isinstance(source, dict) and isinstance(source.get("dataset"), str):
            return source["dataset"]
    return "Market-1501 (real or synthetic: not recorded)"


def ex2_fields(ctx: BuildContext) -> dict[str, str]:
    """The numbers Exercise 2's answers quote as ``{placeholders}``, read from the latest logged runs.

    ``q1_<split>_<column>``, ``q1_shared_identities`` and ``q1_dataset`` (q1_plot_dataset.py); ``q6_rank1``,
    ``q6_map``..., ``q6_dataset``, ``q6_epochs``, ``q6_iterations``, ``q6_batches_per_epoch``, ``q6_p``, ``q6_k``,
    ``q6_train_images``, ``q6_identities``, ``q6_random_batch_positives`` (main.py); ``q7_rank1``, ``q7_map``...
    (evaluation_tp.py) and ``raw_rank1``, ``raw_map``... (its ``--raw-pixels`` baseline). Percentages have two
    decimals.
    """
    fields: dict[str, str] = {}
    statistics_run = ctx.index.select("q1_plot_dataset")
    if statistics_run is not None:
        statistics = statistics_run.other_json.get("statistics.json") or {}
        for split, values in (statistics.get("splits") or {}).items():
            fields.update({f"q1_{split}_{name}": count(value) for name, value in (values or {}).items()})
        fields["q1_dataset"] = dataset_of(statistics_run)
        if "train_test_shared_identities" in statistics:
            fields["q1_shared_identities"] = count(statistics["train_test_shared_identities"])
    runs = {"q6": ctx.index.select("main"), "q7": ctx.index.select("evaluation_tp", is_network_evaluation),
            "raw": ctx.index.select("evaluation_tp", is_raw_pixel_evaluation)}
    for prefix, run in runs.items():
        if run is not None and run.results:
            fields.update({f"{prefix}_{key.lower()}": percent(run.results.get(key)) for key, _ in RANKS})
            fields[f"{prefix}_dataset"] = dataset_of(run)
    trained = runs["q6"]
    if trained is not None:
        config = trained.config
        if all(is_number(config.get(key)) for key in ("batches_per_epoch", "batch_size", "num_instances", "epochs")):
            fields.update(q6_batches_per_epoch=count(config["batches_per_epoch"]), q6_k=count(config["num_instances"]),
                          q6_p=count(config["batch_size"] // config["num_instances"]),
                          q6_epochs=count(config["epochs"]),
                          q6_iterations=count(config["batches_per_epoch"] * config["epochs"]))
        fields.update({name: count(config[key]) for name, key in (("q6_train_images", "train_images"),
                                                                 ("q6_identities", "num_classes"))
                       if key in config})
        images, identities, batch = (config.get(key) for key in ("train_images", "num_classes", "batch_size"))
        if all(is_number(value) and value > 1 for value in (images, identities, batch)):
            # The other images of the anchor's person among batch - 1 drawn at random, at the mean images per person.
            fields["q6_random_batch_positives"] = f"{(batch - 1) * (images / identities - 1) / (images - 1):.2f}"
    return fields


def ex2_answer(ctx: BuildContext, section: Section) -> str:
    """The section's answer with its ``{placeholders}`` filled from the runs (``**?**`` for a run not made yet)."""
    path = ctx.answers_dir / (section.answer or "")
    if not section.answer or not path.is_file():
        return ctx.answer(section.answer, section.answer_required) if section.answer else ""
    ctx.answers_used.add(section.answer)
    text, unknown = fill_placeholders(strip_comments(path.read_text(encoding="utf-8")), ex2_fields(ctx))
    if unknown:
        text, _ = fill_placeholders(text, {name: "**?**" for name in unknown})
        commands = [DATASET, MAIN, EVALUATE, RAW_PIXELS]
        text = (f"> The numbers marked **?** come from runs not made yet ({ctx.commands_text(commands)}).\n\n"
                + text)
    return demote_headings(text, 3) + "\n"


def render_ex2_q1(ctx: BuildContext, section: Section) -> str:
    parts = [ex2_answer(ctx, section)]
    run = ctx.index.select("q1_plot_dataset")
    if run is None:
        return "\n".join([*parts, ctx.missing("the dataset statistics and figure", *section.commands)])
    ctx.index.mark_used(section.title, run)
    parts.append(run_line(run))
    statistics = run.other_json.get("statistics.json") or {}
    splits = statistics.get("splits") if isinstance(statistics.get("splits"), dict) else {}
    if splits:
        parts.append(f"Splits of the **{dataset_of(run)}** (identities without distractors, images without junk):\n")
        parts.append(table(("split", *STATISTIC_COLUMNS),
                           ((split, *(values.get(name, "-") for name in STATISTIC_COLUMNS))
                            for split, values in splits.items() if isinstance(values, dict))))
        if "train_test_shared_identities" in statistics:
            parts.append(f"Identities shared by the training and test splits: "
                         f"{statistics['train_test_shared_identities']}.\n")
    else:
        parts.append(f"> No `statistics.json` in this run: re-run {ctx.commands_text(section.commands)}.\n")
    for figure in run.figures:
        parts.append(ctx.copy_figure(figure, f"{section.key}_{figure.stem}{figure.suffix.lower()}",
                                     f"Training identities (rows) as seen by each camera (columns), {dataset_of(run)}"))
    return "\n".join(parts)


def results_row(label: str, results: dict[str, Any]) -> tuple[Any, ...]:
    return (label, *(percent(results.get(key)) for key, _ in RANKS), results.get("num_query", "-"),
            results.get("num_gallery", "-"))


RANK_HEADER = ("model", *(f"{name} (%)" for _, name in RANKS), "queries", "gallery images")


def render_ex2_q6(ctx: BuildContext, section: Section) -> str:
    parts = [ex2_answer(ctx, section)]
    run = ctx.index.select("main")
    if run is None:
        return "\n".join([*parts, ctx.missing("the re-identification training", *section.commands)])
    ctx.index.mark_used(section.title, run)
    config = run.config
    dataset = dataset_of(run)
    parts.append(run_line(run))
    setting = ", ".join(f"{name} {config[name]}" for name in ("backbone", "height", "width", "epochs", "batch_size",
                                                                "num_instances", "lr", "margin", "mining")
                        if name in config)
    if setting:
        parts.append(f"Settings: {setting}.\n")
    loss_tags = [tag for tag in run.epoch_tags() if tag.startswith("Loss/")]
    panels = [("loss parts", "loss", series_of(run, loss_tags), False),
              ("learning rate", "lr", series_of(run, ["LearningRate"]), False),
              ("identity accuracy (train)", "%", series_of(run, ["Accuracy/train_id"]), True),
              ("rank-1 and mAP (test)", "%", series_of(run, ["Eval/rank1", "Eval/mAP"]), True)]
    panels = [panel for panel in panels if panel[2]]
    if panels:
        path = figures.plot_panels(ctx.figure_path(f"{section.key}_training.png"),
                                   f"Re-identification training, {dataset}", panels)
        source = "TensorBoard events" if run.event_files else "metrics.json"
        parts.append(ctx.image(path, f"Training curves per epoch on the {dataset}: each loss part, learning rate, "
                                     f"training identity accuracy, rank-1 and mAP where evaluated (from {source})"))
    if run.results and all(key in run.results for key, _ in RANKS):
        parts.append(f"Test split of the **{dataset}**:\n")
        parts.append(table(RANK_HEADER, [results_row(f"{config.get('backbone', 'network')} (main.py)",
                                                     run.results)]))
    else:
        parts.append(f"> No `results.json` with rank-1/5/10/mAP in this run: it did not finish; re-run "
                     f"{ctx.commands_text(section.commands)}.\n")
    return "\n".join(parts)


def render_ex2_q7(ctx: BuildContext, section: Section) -> str:
    evaluation = ctx.index.select("evaluation_tp", is_network_evaluation)
    raw = ctx.index.select("evaluation_tp", is_raw_pixel_evaluation)
    trained = ctx.index.select("main")
    parts, rows, cmc, datasets = [ex2_answer(ctx, section)], [], {}, set()
    if trained is not None and trained.results and "rank1" in trained.results:
        rows.append(results_row("trained network, at the end of main.py", trained.results))
        datasets.add(dataset_of(trained))
        if isinstance(trained.results.get("cmc"), list):
            cmc["trained (main.py)"] = trained.results["cmc"]
    if evaluation is None:
        parts.append(ctx.missing("the evaluation of a saved checkpoint", EVALUATE))
    else:
        ctx.index.mark_used(section.title, evaluation)
        parts.append(run_line(evaluation))
        if evaluation.results.get("checkpoint"):
            parts.append(f"Checkpoint: `{evaluation.results['checkpoint']}`.\n")
        rows.append(results_row("checkpoint reloaded by evaluation_tp.py", evaluation.results))
        datasets.add(dataset_of(evaluation))
        if isinstance(evaluation.results.get("cmc"), list):
            cmc["reloaded checkpoint (evaluation_tp.py)"] = evaluation.results["cmc"]
    if raw is None:
        parts.append(ctx.missing("the raw-pixel nearest-neighbour baseline", RAW_PIXELS))
    else:
        ctx.index.mark_used(section.title, raw)
        rows.append(results_row("raw pixels, nearest neighbour (no learning)", raw.results))
        datasets.add(dataset_of(raw))
        if isinstance(raw.results.get("cmc"), list):
            cmc["raw pixels"] = raw.results["cmc"]
    on = " and ".join(sorted(datasets))
    if rows:
        parts.append(f"Test split of the **{on}**:\n")
        parts.append(table(RANK_HEADER, rows))
    if cmc:
        path = figures.plot_cmc(ctx.figure_path(f"{section.key}_cmc.png"), f"CMC curve, {on}", cmc)
        parts.append(ctx.image(path, f"CMC on the {on}: fraction of queries whose first true match is in the top k"))
    elif evaluation is not None:
        parts += [ctx.copy_figure(figure, f"{section.key}_cmc.png", f"CMC curve, {on}")
                  for figure in evaluation.figures if figure.stem == "cmc"]
    if evaluation is not None:
        ranked = [figure for figure in evaluation.figures if figure.stem == "ranked_list"]
        for figure in ranked:
            parts.append(ctx.copy_figure(figure, f"{section.key}_ranked_list.png",
                                         f"Ranked lists on the {dataset_of(evaluation)}: each query (grey) and its "
                                         "top-10 gallery images, framed green for the same person and red otherwise"))
        if not ranked:
            parts.append(f"> No ranked-list figure in this run: re-run {ctx.commands_text([EVALUATE])}.\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------- optional labs
ARCHITECTURES = ("densenet", "densenet52", "resnext32_16x8d")
LAB_DIGITS_SCRIPT = "densenet_resnext"
LAB_DIGITS_COMMANDS = (*(Command(f"python exercise1/densenet_resnext.py --arch {arch} --lab-subset")
                         for arch in ARCHITECTURES),
                       Command("python exercise1/densenet_resnext.py --arch densenet52 --epochs 1"))
LAB_ARCHITECTURE_ANSWERS = ("lab_densenet_52_layers.md", "lab_densenet_resnext_results.md")


def filled_answer(ctx: BuildContext, name: str, fields: dict[str, str], commands: Iterable[Command]) -> str:
    """An answer whose ``{placeholders}`` are filled from the runs (``**?**`` for a figure not measured yet,
    with the ``commands`` that measure them)."""
    path = ctx.answers_dir / name
    ctx.answers_used.add(name)
    if not path.is_file():
        return f"> **Answer not written yet:** `report/answers/{name}`.\n"
    text, unknown = fill_placeholders(strip_comments(path.read_text(encoding="utf-8")), fields)
    if unknown:
        text, _ = fill_placeholders(text, {placeholder: "**?**" for placeholder in unknown})
        text += f"\n> The figures marked **?** come from runs not made yet: {ctx.commands_text(commands)}.\n"
    return demote_headings(text, 3)


def best_epoch(run: Run, tag: str) -> tuple[Any, Any]:
    """``(best value, its epoch)`` of a per-epoch curve, ``(None, None)`` without one."""
    series = run.epoch_series(tag)
    if not series:
        return None, None
    value, epoch = max(zip(series[1], series[0]), key=lambda pair: (pair[0], -pair[1]))
    return value, int(epoch)


def lab_architecture_fields(run: Run) -> dict[str, str]:
    """The figures an answer quotes about one ``densenet_resnext`` run: ``<arch>_<name>`` for a run on the lab's
    subset (``--lab-subset``), ``<arch>_full_<name>`` for a run on all the digits."""
    results = run.results or {}
    arch = run.config.get("arch", "?") + ("" if run.config.get("lab_subset") else "_full")
    gaps = [(row["Accuracy/train"] - row["Accuracy/test"], row["epoch"]) for row in run.history
            if is_finite_number(row.get("Accuracy/train")) and is_finite_number(row.get("Accuracy/test"))]
    worst_gap, gap_epoch = max(gaps, default=(None, None))
    values = {"accuracy": percent(final_value(run, "Accuracy/test")), "errors": count(results.get("errors_test")),
              "train_accuracy": percent(final_value(run, "Accuracy/train")),
              "parameters": count(results.get("parameters")),
              "worst_gap": decimal(100 * worst_gap if worst_gap is not None else None, 1),
              "worst_gap_epoch": str(gap_epoch)}
    return {f"{arch}_{name}": value for name, value in values.items() if value not in ("-", "None")}


def render_lab_architectures(ctx: BuildContext, section: Section) -> str | None:
    """Lab B, part 1: the latest run of each DenseNet / ResNeXt (``densenet_resnext.py``, and
    ``q4_resnet.py --arch``) per data set, against the ResNet-18; the answers filled from those runs."""
    latest: dict[tuple[str, str, str], Run] = {}
    for script in (LAB_DIGITS_SCRIPT, "q4_resnet"):
        for run in ctx.index.candidates(script, lambda run: run.config.get("arch") in ARCHITECTURES):
            latest[(script, run.config["arch"], run.data_source)] = run  # candidates come oldest first
    if not latest:
        return None
    resnet = ctx.index.select("q4_resnet", is_resnet18)
    rows, curves, fields = [], {}, {}
    shown = ([(("q4_resnet", "resnet18", ""), resnet)] if resnet is not None else []) + sorted(
        latest.items(), key=lambda item: (ARCHITECTURES.index(item[0][1]), item[0][0], item[1].modified))
    for (script, arch, data), run in shown:
        ctx.index.mark_used(section.title, run)
        epochs = max((row["epoch"] for row in run.history), default="-")
        rows.append((arch, f"`{run.name}`" + (" (dry run)" if run.dry_run else ""), epochs,
                     percent(final_value(run, "Accuracy/test")), decimal(final_value(run, "Time/train_epoch_s"), 2),
                     f"`{script}.py`", data or "-"))
        digits = "lab subset" if run.config.get("lab_subset") else data_kind(run.data_source)
        label = f"{arch}, {epochs} epoch(s), {digits}" + ("" if script == LAB_DIGITS_SCRIPT else f" ({script})")
        curves[label] = series_of(run, ("Loss/test", "Accuracy/test"))
        if script == LAB_DIGITS_SCRIPT and not run.dry_run:
            fields.update(lab_architecture_fields(run))
    finished = {arch: value for arch in ARCHITECTURES for value in [fields.get(f"{arch}_accuracy")] if value}
    if len(finished) > 1:
        ranked = sorted(finished.items(), key=lambda item: -float(item[1]))
        fields["architectures_ranking"] = " > ".join(f"{arch} ({value} %)" for arch, value in ranked)
    parts = [filled_answer(ctx, name, fields, section.commands) for name in LAB_ARCHITECTURE_ANSWERS]
    parts.append(table(("architecture", "run", "epochs", "test accuracy (%)", "s / epoch", "script", "data"), rows))
    path = figures.plot_comparison(ctx.figure_path(f"{section.key}_architectures.png"),
                                   "Architectures on MNIST", curves)
    parts.append(ctx.image(path, "Test loss and accuracy per epoch of each network (the legend names the network, "
                                 "its epochs and its digits; the table its exact data)"))
    return "\n".join(parts)


FACENET = "facenet_knn"
TRIPLET_MODES = ("random", "batch_hard", "semi_hard")
FACENET_COMMANDS = (Command("python exercise2/facenet_knn.py --lab-subset"),
                    Command("python exercise2/facenet_knn.py --lab-subset --triplets semi_hard"),
                    Command("python exercise2/facenet_knn.py --lab-subset --triplets random"),
                    Command("python exercise2/facenet_knn.py --lab-subset --triplet-classes 0 1 2 3 4 "
                            "--num-instances 16"))
FACENET_ANSWERS = ("lab_facenet_knn.md", "lab_facenet_errors.md", "lab_facenet_centre_points.md",
                   "lab_facenet_chosen_classes.md", "lab_facenet_bonus_mining.md")
LAB_BAR_ERRORS_PER_1000 = 30


def all_digits(run: Run) -> bool:
    """A run whose triplets come from every digit and whose errors are the kNN's."""
    return (run.results or {}).get("triplet_classes", "all") == "all" and run.config.get("predict", "knn") == "knn"


def chosen_digits(run: Run) -> bool:
    """A run of ``--triplet-classes``: its triplets come from some digits only."""
    return (run.results or {}).get("triplet_classes", "all") != "all"


def latest_result(ctx: BuildContext, script: str, where: Callable[[Run], bool]) -> Run | None:
    """The run ``select`` gives, passing over a dry run that ``--run`` did not name when a real run exists."""
    run = ctx.index.select(script, where)
    if run is not None and run.dry_run and run.name not in {pick.rpartition("/")[2] for pick in ctx.index.picks}:
        run = ctx.index.select(script, lambda other: where(other) and not other.dry_run) or run
    return run


def errors_table(run: Run) -> list[dict[str, str]] | None:
    """The rows of a run's ``errors.csv`` (one per misclassified test digit), None without the file."""
    path = run.directory / "errors.csv"
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def confusions_text(rows: list[dict[str, str]]) -> str:
    """``4 read as 9 (4), 9 read as 8 (2) and 12 other single errors`` from ``errors.csv`` rows."""
    from collections import Counter

    if not rows:
        return "none"
    counts = Counter((row["true"], row["predicted"]) for row in rows).most_common()
    repeated = [f"{true} read as {predicted} ({n})" for (true, predicted), n in counts[:6] if n > 1]
    others = len(rows) - sum(n for (_, _), n in counts[:len(repeated)])
    if not repeated:
        return f"{len(rows)} different confusions, none repeated"
    return ", ".join(repeated) + (f" and {others} other errors" if others else "")


def data_kind(source: str) -> str:
    """The kind of digits a run used, without paths: ``full MNIST``, ``embedded MNIST sample``..."""
    return re.split(r" from | \(|;", source)[0] if source else "-"


def per_class_accuracy(results: dict[str, Any], digits: Sequence[int]) -> Any:
    """Accuracy on the test digits of ``digits``, from ``results.json``'s per-class counts (None without them)."""
    sizes, errors = results.get("test_digits_per_class"), results.get("errors_per_class")
    if not (isinstance(sizes, list) and isinstance(errors, list) and len(sizes) == len(errors) == 10):
        return None
    total = sum(sizes[digit] for digit in digits)
    return 1 - sum(errors[digit] for digit in digits) / total if total else None


def facenet_fields(mode_runs: dict[str, Run], classes_run: Run | None) -> dict[str, str]:
    """The figures the FaceNet answers quote: ``<mode>_...`` per triplet mode, ``fn_...`` for the headline
    (batch-hard) run and its errors, ``q3_...`` for the run on chosen digits."""
    fields: dict[str, str] = {}
    for mode, run in mode_runs.items():
        results = run.results or {}
        best, epoch = best_epoch(run, "Accuracy/test_knn")
        fields.update({f"{mode}_{name}": value for name, value in {
            "knn_test": percent(results.get("accuracy_test_knn")),
            "knn_train": percent(results.get("accuracy_train_knn")),
            "centre_test": percent(results.get("accuracy_test_centre")), "errors": count(results.get("errors_test")),
            "epochs": count(results.get("epochs")), "best_knn_test": percent(best), "best_epoch": str(epoch),
            "final_loss": decimal(final_value(run, "Loss/train")),
        }.items() if value not in ("-", "None")})
    accuracies = {mode: (run.results or {}).get("accuracy_test_knn") for mode, run in mode_runs.items()}
    accuracies = {mode: value for mode, value in accuracies.items() if is_finite_number(value)}
    if len(accuracies) > 1:
        ranked = sorted(accuracies.items(), key=lambda item: -item[1])
        fields["bonus_ranking"] = " > ".join(f"{mode} ({percent(value)} %)" for mode, value in ranked)
    headline = mode_runs.get("batch_hard")
    if headline is not None and headline.results:
        results = headline.results
        knn, centre = results.get("accuracy_test_knn"), results.get("accuracy_test_centre")
        if is_finite_number(knn) and is_finite_number(centre):
            fields["fn_centre_gap"] = f"{100 * (knn - centre):.2f}"
        if is_finite_number(knn) and is_number(results.get("test_size")) and results["test_size"]:
            # The binomial standard error of an accuracy measured on test_size digits.
            fields["fn_standard_error"] = f"{100 * math.sqrt(knn * (1 - knn) / results['test_size']):.1f}"
        size, errors = results.get("test_size"), results.get("errors_test")
        series = headline.epoch_series("Accuracy/test_knn")
        fields.update({"fn_data": data_kind(headline.data_source), "fn_k": count(results.get("k")),
                       "fn_test_size": count(size), "fn_train_size": count(results.get("train_size"))})
        if is_number(size) and is_number(errors) and size:
            per_thousand = 1000 * errors / size
            fields["fn_errors_per_1000"] = f"{per_thousand:.0f}" if size == 1000 else f"{per_thousand:.1f}"
            fields["fn_bar"] = ("meets" if per_thousand <= LAB_BAR_ERRORS_PER_1000 else "misses")
        centre_series = headline.epoch_series("Accuracy/test_centre")
        if series and centre_series:
            fields["fn_knn_first"], fields["fn_centre_first"] = percent(series[1][0]), percent(centre_series[1][0])
        if series:
            reached = [int(epoch) for epoch, value in zip(*series) if value >= 0.97]
            fields["fn_first_epoch_97"] = str(reached[0]) if reached else "none of them"
        rows, k = errors_table(headline), results.get("k")
        if rows is not None and is_number(k):
            votes = [int(row[f"votes_for_predicted_of_{k}"]) for row in rows]
            fields.update({"fn_confusions": confusions_text(rows),
                           "fn_errors_unanimous": str(sum(vote == k for vote in votes)),
                           "fn_errors_split": str(sum(vote < k for vote in votes)),
                           "fn_errors_true_nearer": str(sum(float(row["distance_nearest_true"])
                                                            < float(row["distance_nearest_predicted"])
                                                            for row in rows))})
    if classes_run is not None and classes_run.results:
        results = classes_run.results
        chosen = [int(digit) for digit in results.get("triplet_classes", [])]
        others = [digit for digit in range(10) if digit not in chosen]
        fields.update({"q3_classes": " ".join(map(str, chosen)), "q3_other_classes": " ".join(map(str, others)),
                       "q3_triplets": str(results.get("triplets")), "q3_epochs": count(results.get("epochs")),
                       "q3_seen": percent(results.get("accuracy_test_seen_classes")),
                       "q3_unseen": percent(results.get("accuracy_test_unseen_classes")),
                       "q3_knn_test": percent(results.get("accuracy_test_knn")),
                       "q3_centre_test": percent(results.get("accuracy_test_centre"))})
        rows = errors_table(classes_run)
        if rows is not None:
            fields["q3_confusions"] = confusions_text(rows)
        if headline is not None and headline.results:
            fields["fn_seen"] = percent(per_class_accuracy(headline.results, chosen))
            fields["fn_unseen"] = percent(per_class_accuracy(headline.results, others))
    return {name: value for name, value in fields.items() if value not in ("-", "None")}


def render_lab_facenet(ctx: BuildContext, section: Section) -> str | None:
    """Lab B, part 2: the latest all-digit run of each triplet mode side by side, the answers filled from them,
    then each run's curves and figures, and the run on chosen digits (``--triplet-classes``)."""
    mode_runs = {}
    for mode in TRIPLET_MODES:
        run = latest_result(ctx, FACENET, lambda run, mode=mode: run.config.get("triplets") == mode and all_digits(run))
        if run is not None:
            mode_runs[mode] = run
    classes_run = latest_result(ctx, FACENET, chosen_digits)
    if not mode_runs and classes_run is None:
        return None
    parts = []
    finished = {mode: run for mode, run in mode_runs.items() if run.results}
    if finished:
        columns: list[str] = []
        for run in finished.values():
            columns += [name for name in headline_numbers(run) if name not in columns]
        parts.append(table(("variant", "run", *map(named_header, columns)),
                           ((f"triplets = {mode}", f"`{run.name}`" + (" (dry run)" if run.dry_run else ""),
                             *(named_value(name, headline_numbers(run).get(name, "-")) for name in columns))
                            for mode, run in finished.items())))
    for mode in [mode for mode in mode_runs if mode not in finished]:
        parts.append(f"> The latest `{mode}` run, `{mode_runs[mode].name}`, has not finished: its curves so far "
                     f"are below.\n")
    if mode_runs:
        data = {(run.data_source, run.config.get("epochs")) for run in mode_runs.values()}
        if len(data) > 1:
            parts.append("> These runs differ in data or epochs: compare them with care.\n")
        panels = [(title, unit, {mode: series for mode, run in mode_runs.items()
                                 for series in [run.epoch_series(tag)] if series}, unit == "%")
                  for title, unit, tag in (("kNN accuracy, test", "%", "Accuracy/test_knn"),
                                           ("kNN accuracy, train", "%", "Accuracy/train_knn"),
                                           ("training loss", "loss", "Loss/train"))]
        panels = [panel for panel in panels if panel[2]]
        if any(panel[0].startswith("kNN") for panel in panels):
            path = figures.plot_panels(ctx.figure_path(f"{section.key}_modes.png"), "Triplet modes", panels)
            parts.append(ctx.image(path, "kNN accuracy per epoch on the test and training digits, and the training "
                                         "loss, of each triplet mode"))
    fields = facenet_fields(mode_runs, classes_run)
    parts += [filled_answer(ctx, name, fields, section.commands) for name in FACENET_ANSWERS]
    for mode, run in mode_runs.items():
        parts.append(f"#### triplets = {mode}\n\n" + generic_run(ctx, f"{section.key}_{mode}", run,
                                                                 f"{section.title} (triplets {mode})", numbers=False))
    if classes_run is not None:
        chosen = (classes_run.results or {}).get("triplet_classes")
        parts.append(f"#### triplets from digits {chosen}\n\n" + generic_run(
            ctx, f"{section.key}_chosen_classes", classes_run, f"{section.title} (chosen digits)"))
    return "\n".join(parts)


# --------------------------------------------------------------------------- the registry
EXERCISES: tuple[Chapter, ...] = (
    Chapter("Exercise 1 — from a NumPy MLP to ResNet-18 on MNIST", (
        Section("ex1_q1", "Q1 — The NumPy MLP", render_ex1_q1, ("q1_numpy_mlp",), (Q1,), answer="ex1_q1.md"),
        Section("ex1_q2", "Q2 — The same network as an nn.Module", render_ex1_q2, ("q2_module_mlp",), (Q2,)),
        Section("ex1_q3", "Q3 — TensorBoard summaries", render_ex1_q3, ("q3_summaries",), (Q3,),
                answer="ex1_q3.md"),
        Section("ex1_q4", "Q4 — ResNet-18", render_ex1_q4, ("q4_resnet",), (Q4,)),
        Section("ex1_summary", "Final accuracies of Exercise 1", render_ex1_summary),
        Section("ex1_q5", "Q5 — Grid search: Tables 1 and 2", render_ex1_q5, (GRID_FOLDER,), (GRID,),
                answer="ex1_q5.md"),
        Section("ex1_q6", "Q6 — Regularisation", render_answer_only, answer="ex1_q6.md"),
    )),
    Chapter("Exercise 2 — person re-identification on Market-1501", (
        Section("ex2_q1", "Q1 — The dataset", render_ex2_q1, ("q1_plot_dataset",), (DATASET,),
                answer="ex2_q1.md", answer_required=False, code=("exercise2/q1_plot_dataset.py",)),
        Section("ex2_q2", "Q2 — The triplet loss", ex2_answer, answer="ex2_q2.md", answer_required=False,
                code=("utils/TripletLoss.py",)),
        Section("ex2_q3", "Q3 — The identity sampler", ex2_answer, answer="ex2_q3.md",
                code=("utils/RandomSampler.py",)),
        Section("ex2_q4", "Q4 — The dataset class", ex2_answer, answer="ex2_q4.md", answer_required=False,
                code=("data.py",)),
        Section("ex2_q5", "Q5 — The network and the loss", ex2_answer, answer="ex2_q5.md",
                code=("network.py", "loss.py")),
        Section("ex2_q6", "Q6 — Training and evaluation", render_ex2_q6, ("main",), (MAIN,), answer="ex2_q6.md",
                code=("main.py", "utils/metrics.py")),
        Section("ex2_q7", "Q7 — Reloading and evaluating a checkpoint", render_ex2_q7, ("evaluation_tp",),
                (MAIN, EVALUATE, RAW_PIXELS), answer="ex2_q7.md", answer_required=False, code=("evaluation_tp.py",)),
    )),
)

LABS: tuple[Section, ...] = (
    lab_section("lab_siamese", "siamese_verification", "Siamese face verification (network C)",
                "python exercise2/siamese_verification.py --image-size 32",
                answers=("lab_siamese_bce_vs_contrastive.md",)),
    Section("lab_architectures", "DenseNet and ResNeXt on MNIST", render_lab_architectures, (LAB_DIGITS_SCRIPT,),
            LAB_DIGITS_COMMANDS, code=("exercise1/densenet_resnext.py",)),
    Section("lab_facenet", "FaceNet triplet embedding and kNN on MNIST", render_lab_facenet, (FACENET,),
            FACENET_COMMANDS, code=("exercise2/facenet_knn.py",)),
    lab_section("lab_ce_vs_contrastive", "ce_vs_contrastive", "Cross-entropy vs contrastive loss",
                "python exercise2/ce_vs_contrastive.py --train-fractions 0.01 0.05 0.1 0.25 0.5 1",
                answers=("lab_ce_vs_contrastive.md", "lab_ce_vs_contrastive_sample_efficiency.md")),
    lab_section("lab_embeddings_2d", "embeddings_2d", "Online mining and 2-D embeddings",
                "python exercise2/embeddings_2d.py --pair-selectors all_positive hard_negative "
                "--triplet-selectors all hardest random_hard semi_hard",
                answers=("lab_embeddings_2d.md", "lab_embeddings_2d_selectors.md")),
)


def claimed_scripts() -> set[str]:
    return {script for chapter in EXERCISES for section in chapter.sections for script in section.scripts} | {
        script for section in LABS for script in section.scripts}


def reproduction_commands() -> list[Command]:
    """Every command of the required sections, in report order, each once."""
    commands: list[Command] = []
    for chapter in EXERCISES:
        for section in chapter.sections:
            commands += [command for command in section.commands if command not in commands]
    return commands
