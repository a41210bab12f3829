"""The report's sections: a registry of what each question shows, where it reads it and what produces it.

A :class:`Section` names the ``runs/`` sub-folders it reads, the exact commands that produce them, its
answer file in ``report/answers/`` and a render function that turns the selected run into Markdown
(tables, figures). A missing result never fails the build: the section says so and gives the command.

Adding an optional lab is one entry in :data:`LABS`: ``lab_section(key, script, title, *commands,
variant=None)`` gives the generic rendering (run line, numbers of ``results.json`` and ``metrics.json``,
curves of every logged per-epoch tag, every PNG of the run; with ``variant``, the latest run of each value
of that setting side by side), and a lab with its own needs passes its own ``render`` to ``Section``. A
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
    return line + "\n"


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
    """Train/test loss and accuracy curves of a classification run (events first, else ``metrics.json``)."""
    tags = ("Loss/train", "Loss/test", "Accuracy/train", "Accuracy/test")
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


def run_variant(run: Run, variant: str) -> Any:
    """The value of a run's ``variant`` setting (its config, else its results)."""
    return run.config.get(variant, (run.results or {}).get(variant))


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


def lab_section(key: str, script: str, title: str, *commands: str, variant: str | None = None,
                answers: Sequence[str] = ()) -> Section:
    """An optional lab with the generic rendering of ``runs/<script>/``.

    With ``variant`` (a setting such as ``loss``), the latest run of each value of that setting is shown,
    and their numbers side by side; otherwise the latest run, preceded by the lab's ``answers`` (files of
    ``report/answers/``) with their placeholders filled from that run's ``report_fields``.
    """
    def render(ctx: BuildContext, section: Section) -> str | None:
        if variant is None:
            run = ctx.index.select(script)
            if run is None:
                return None
            fields = {name: str(value) for name, value in ((run.results or {}).get("report_fields") or {}).items()}
            return "\n".join([*filled_answers(ctx, answers, fields), generic_run(ctx, key, run, title)])
        values = []
        for run in ctx.index.candidates(script):
            # A run still starting has no config yet: it joins the table once it says which variant it is.
            if run_variant(run, variant) not in (*values, None):
                values.append(run_variant(run, variant))
        runs = {value: ctx.index.select(script, lambda run, value=value: run_variant(run, variant) == value)
                for value in values}
        if not runs:
            return None
        columns: list[str] = []
        for run in runs.values():
            columns += [name for name in headline_numbers(run) if name not in columns]
        rows = []
        for value, run in runs.items():
            numbers = headline_numbers(run)
            rows.append((f"{variant} = {value}", f"`{run.name}`" + (" (dry run)" if run.dry_run else ""),
                         *(named_value(name, numbers.get(name, "-")) for name in columns)))
        header = ("variant", "run", *map(named_header, columns))
        parts = [table(header, rows)]
        for value, run in runs.items():
            parts.append(f"#### {variant} = {value}\n\n" + generic_run(
                ctx, f"{key}_{re.sub(r'[^A-Za-z0-9]+', '_', str(value))}", run, f"{title} ({variant} {value})",
                numbers=False))
        return "\n".join(parts)

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
    return (f"Final epoch: train loss {decimal(final_value(run, 'Loss/train'))}, train accuracy "
            f"{percent(final_value(run, 'Accuracy/train'))} %, test loss {decimal(final_value(run, 'Loss/test'))}, "
            f"**test accuracy {percent(final_value(run, 'Accuracy/test'))} %**.\n")


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
    settings = ("stem", "epochs", "batch_size", "lr", "weight_decay", "momentum", "shift", "zero_init_residual")
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
        name = f"`{run.name}`" + (" (dry run)" if run.dry_run else "")
        rows.append((question, name, epochs, percent(final_value(run, "Accuracy/train")),
                     percent(final_value(run, "Accuracy/test")), decimal(final_value(run, "Loss/test")),
                     decimal(final_value(run, "Time/train_epoch_s"), 2)))
    return table(("question", "run", "epochs", "train accuracy (%)", "test accuracy (%)", "test loss",
                  "s / epoch"), rows)


# ----------------------------------------------------------------------------- Q5: the grid
@dataclass
class GridTableData:
    """One table read back from ``table<N>.csv``: cell texts as the grid wrote them, parsed."""

    key: str
    corner: str
    rows: list[str]
    columns: list[str]
    texts: dict[tuple[str, str], str]

    def status(self, cell: tuple[str, str]) -> tuple[str, float | None]:
        """``(status, accuracy in [0, 1])`` of a cell text: ``98.20``, ``11.35 (diverged)``, ``failed``, ``-``."""
        text = self.texts.get(cell, "-").strip()
        match = re.fullmatch(r"(-?[0-9.]+|nan|inf)( \(diverged\))?", text)
        if match:
            return ("diverged" if match.group(2) else "ok"), float(match.group(1)) / 100
        return ("missing" if text in ("", "-") else text), None


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


def grid_markdown(data: GridTableData, caption: str) -> str:
    """The table in the TP's layout (rows the table's parameter, columns λ) via ``utils.grid``'s formatter."""
    from utils.grid import TableCell, format_grid_markdown

    cells = {}
    for key in data.texts:
        status, value = data.status(key)
        if status != "missing":
            cells[key] = TableCell(status, value)
    corner = data.corner.replace("_", " ").replace("lr", "λ")
    return format_grid_markdown(corner, data.rows, data.columns, cells, caption)


def grid_fields(data: GridTableData) -> dict[str, str]:
    """The figures the Q5 comment quotes, computed from one table (names as ``q5_grid_search`` writes them).

    ``t1_best_accuracy``, ``t1_best_lr``, ``t1_best_wd`` (``t2_best_bs``), ``t1_diverged_count``,
    ``t1_diverged_cells`` and one field per cell, ``t1_wd0_001_lr0_1``.
    """
    short = data.key.replace("table", "t")
    row_short = "bs" if data.corner.startswith("batch") else "wd"
    fields: dict[str, str] = {}
    ok: dict[tuple[str, str], float] = {}
    diverged = []
    for row in data.rows:
        for column in data.columns:
            status, value = data.status((row, column))
            fields[f"{short}_{row_short}{row.replace('.', '_')}_lr{column.replace('.', '_')}"] = \
                data.texts.get((row, column), "-")
            if status == "ok" and value is not None and math.isfinite(value):
                ok[(row, column)] = value
            elif status == "diverged":
                diverged.append((row, column))
    if ok:
        top = max(ok.values())
        # Ties: the cell with the smallest (row, λ) values, the one the grid's own results.json names.
        row, column = min((key for key, value in ok.items() if value == top), key=numeric_key)
        fields.update({f"{short}_best_accuracy": data.texts[(row, column)], f"{short}_best_lr": column,
                       f"{short}_best_{row_short}": row})
    fields[f"{short}_diverged_count"] = str(len(diverged))
    row_name = "batch size" if row_short == "bs" else "weight decay"
    fields[f"{short}_diverged_cells"] = (", ".join(f"λ = {column} with {row_name} {row}" for row, column in diverged)
                                         or "none")
    return fields


def numeric_key(cell: tuple[str, str]) -> tuple[Any, ...]:
    """Sort key of a (row, λ) cell by value when both read as numbers, else by text."""
    try:
        return (0, float(cell[0]), float(cell[1]))
    except ValueError:
        return (1, *cell)


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
    results: dict[str, Any] = {}
    if (grid_dir / "results.json").is_file():
        try:
            loaded = json.loads((grid_dir / "results.json").read_text())
            results = loaded if isinstance(loaded, dict) else {}
            if not results:
                ctx.notices.add(f"skipped {grid_dir / 'results.json'}: expected a JSON object")
        except (OSError, ValueError) as error:
            ctx.notices.add(f"skipped {grid_dir / 'results.json'}: not valid JSON ({str(error).splitlines()[0]})")
    settings = results.get("settings") if isinstance(results.get("settings"), dict) else {}
    fields = {key: str(value) for key, value in (results.get("report_fields") or {}).items()}
    parts, tables, missing = [], {}, []
    for number in ("1", "2"):
        path = grid_dir / f"table{number}.csv"
        data = read_grid_table(path, ctx.notices) if path.is_file() else None
        if data is None:
            missing.append(number)
            continue
        tables[number] = data
        fields.update(grid_fields(data))
        parts.append(grid_markdown(data, grid_caption(number, data, settings)))
        values = {key: value for key in data.texts
                  for status, value in [data.status(key)] if value is not None and status in ("ok", "diverged")}
        diverged = {key for key in data.texts if data.status(key)[0] == "diverged"}
        row_label = "batch size" if data.corner.startswith("batch") else "weight decay"
        path = figures.plot_grid_table(ctx.figure_path(f"{section.key}_table{number}.png"),
                                       f"Table {number}", row_label, data.rows, data.columns, values, diverged)
        parts.append(ctx.image(path, f"Table {number} as curves: test accuracy against λ"))
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
        if settings:
            line += (f": {settings.get('epochs')} epoch(s) per cell on {count(settings.get('train_images'))} "
                     f"training images ({settings.get('data')})")
        if isinstance(results.get("wall_seconds"), (int, float)):
            line += f", wall time {results['wall_seconds'] / 60:.1f} min"
        line += "."
        if settings.get("dry_run"):
            line += f" This is a {DRY_RUN_WARNING}."
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
    rows = "batch size" if data.corner.startswith("batch") else "weight decay"
    fixed = "weight decay 0.001" if rows == "batch size" else "batch size 64"
    caption = f"**Table {number}**: test accuracy (%), rows {rows}, columns learning rate λ, {fixed}"
    if settings:
        caption += f"; {settings.get('epochs')} epoch(s) on {count(settings.get('train_images'))} training images"
    return caption + ". Best cell in **bold**; *(diverged)*: the training loss became NaN/inf."


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


def render_ex2_q1(ctx: BuildContext, section: Section) -> str:
    run = ctx.index.select("q1_plot_dataset")
    if run is None:
        return ctx.missing("the dataset statistics and figure", *section.commands)
    ctx.index.mark_used(section.title, run)
    parts = [run_line(run)]
    statistics = run.other_json.get("statistics.json") or {}
    splits = statistics.get("splits") if isinstance(statistics.get("splits"), dict) else {}
    if splits:
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
                                     "Training identities (rows) as seen by each camera (columns)"))
    return "\n".join(parts)


def render_answer_only(ctx: BuildContext, section: Section) -> str:
    return ""


def results_row(label: str, results: dict[str, Any]) -> tuple[Any, ...]:
    return (label, *(percent(results.get(key)) for key, _ in RANKS), results.get("num_query", "-"),
            results.get("num_gallery", "-"))


RANK_HEADER = ("model", *(f"{name} (%)" for _, name in RANKS), "queries", "gallery images")


def render_ex2_q6(ctx: BuildContext, section: Section) -> str:
    run = ctx.index.select("main")
    if run is None:
        return ctx.missing("the re-identification training", *section.commands)
    ctx.index.mark_used(section.title, run)
    config = run.config
    parts = [run_line(run)]
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
        path = figures.plot_panels(ctx.figure_path(f"{section.key}_training.png"), "Re-identification training",
                                   panels)
        source = "TensorBoard events" if run.event_files else "metrics.json"
        parts.append(ctx.image(path, f"Training curves per epoch: each loss part, learning rate, training identity "
                                     f"accuracy, rank-1 and mAP where evaluated (from {source})"))
    if run.results and all(key in run.results for key, _ in RANKS):
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
    parts, rows, cmc = [], [], {}
    if trained is not None and trained.results and "rank1" in trained.results:
        rows.append(results_row("trained network, at the end of main.py", trained.results))
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
        if isinstance(evaluation.results.get("cmc"), list):
            cmc["reloaded checkpoint (evaluation_tp.py)"] = evaluation.results["cmc"]
    if raw is None:
        parts.append(ctx.missing("the raw-pixel nearest-neighbour baseline", RAW_PIXELS))
    else:
        ctx.index.mark_used(section.title, raw)
        rows.append(results_row("raw pixels, nearest neighbour (no learning)", raw.results))
        if isinstance(raw.results.get("cmc"), list):
            cmc["raw pixels"] = raw.results["cmc"]
    if rows:
        parts.append(table(RANK_HEADER, rows))
    if cmc:
        path = figures.plot_cmc(ctx.figure_path(f"{section.key}_cmc.png"), "CMC curve", cmc)
        parts.append(ctx.image(path, "CMC: fraction of queries whose first true match is within the top k"))
    elif evaluation is not None:
        parts += [ctx.copy_figure(figure, f"{section.key}_cmc.png", "CMC curve")
                  for figure in evaluation.figures if figure.stem == "cmc"]
    if evaluation is not None:
        ranked = [figure for figure in evaluation.figures if figure.stem == "ranked_list"]
        for figure in ranked:
            parts.append(ctx.copy_figure(figure, f"{section.key}_ranked_list.png",
                                         "Ranked lists: each query (grey) and its top-10 gallery images, framed "
                                         "green for the same person and red otherwise"))
        if not ranked:
            parts.append(f"> No ranked-list figure in this run: re-run {ctx.commands_text([EVALUATE])}.\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------- optional labs
ARCHITECTURES = ("densenet", "densenet52", "resnext32_16x8d")


def render_lab_architectures(ctx: BuildContext, section: Section) -> str | None:
    """Lab B: the latest run of each architecture of ``q4_resnet.py --arch``, against the ResNet-18."""
    runs = {}
    for arch in sorted({run.config.get("arch") for run in ctx.index.candidates("q4_resnet")} - {None, "resnet18"}):
        runs[arch] = ctx.index.select("q4_resnet", lambda run, arch=arch: run.config.get("arch") == arch)
    if not runs:
        return None
    resnet = ctx.index.select("q4_resnet", is_resnet18)
    if resnet is not None:
        runs = {"resnet18": resnet, **runs}
    rows, curves = [], {}
    for arch, run in runs.items():
        ctx.index.mark_used(section.title, run)
        rows.append((arch, f"`{run.name}`" + (" (dry run)" if run.dry_run else ""),
                     max((row["epoch"] for row in run.history), default="-"),
                     percent(final_value(run, "Accuracy/test")), decimal(final_value(run, "Time/train_epoch_s"), 2)))
        curves[arch] = series_of(run, ("Loss/test", "Accuracy/test"))
    path = figures.plot_comparison(ctx.figure_path(f"{section.key}_architectures.png"),
                                   "Architectures on MNIST", curves)
    return (table(("architecture", "run", "epochs", "test accuracy (%)", "s / epoch"), rows) + "\n"
            + ctx.image(path, "Test loss and accuracy per epoch of each architecture"))


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
        Section("ex2_q2", "Q2 — The triplet loss", render_answer_only, answer="ex2_q2.md", answer_required=False,
                code=("utils/TripletLoss.py",)),
        Section("ex2_q3", "Q3 — The identity sampler", render_answer_only, answer="ex2_q3.md",
                code=("utils/RandomSampler.py",)),
        Section("ex2_q4", "Q4 — The dataset class", render_answer_only, answer="ex2_q4.md", answer_required=False,
                code=("data.py",)),
        Section("ex2_q5", "Q5 — The network and the loss", render_answer_only, answer="ex2_q5.md",
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
    Section("lab_architectures", "DenseNet and ResNeXt on MNIST", render_lab_architectures, (),
            tuple(Command(f"python exercise1/q4_resnet.py --arch {arch}") for arch in ARCHITECTURES)),
    lab_section("lab_facenet", "facenet_knn", "FaceNet triplet embedding and kNN on MNIST",
                *(f"python exercise2/facenet_knn.py --triplets {mode}" for mode in ("random", "batch_hard",
                                                                                    "semi_hard")),
                variant="triplets"),
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
