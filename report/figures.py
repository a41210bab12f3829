"""The report's figures, drawn from logged curves with matplotlib (Agg backend: no display needed).

Every function takes already-read data (``Series`` = (steps, values)) and writes one PNG; accuracies
and ranks logged as fractions in [0, 1] are drawn in %.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from report.runs import Series  # noqa: E402

DPI = 110


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # No timestamp in the PNG metadata: the same runs give the same bytes.
    figure.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(figure)
    return path


def _percent(series: Series) -> Series:
    return series[0], [100 * value for value in series[1]]


def _draw(axis: plt.Axes, series: Series, label: str, **style) -> None:
    steps, values = series
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    marker = "o" if len(steps) <= 30 else None
    axis.plot(steps, values, label=label, marker=marker, markersize=3, **style)


def _finish_loss_accuracy(figure: plt.Figure, loss_axis: plt.Axes, accuracy_axis: plt.Axes, subset: str, title: str,
                          path: Path) -> Path:
    """Label a loss panel and an accuracy panel (``subset`` prefixes their titles), add legends, save."""
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy", title=f"{subset}loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy (%)", title=f"{subset}accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        if axis.get_lines():
            axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def plot_classification_curves(path: Path, title: str, curves: dict[str, Series],
                               train_steps: Series | None = None, steps_per_epoch: float | None = None) -> Path:
    """Loss (left) and accuracy in % (right) per epoch for the ``Loss/*`` and ``Accuracy/*`` tags of ``curves``.

    ``train_steps`` (per-iteration training loss, x in iterations) is drawn faintly on the loss panel,
    its x rescaled to epochs with ``steps_per_epoch``.
    """
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.4))
    if train_steps is not None and steps_per_epoch:
        steps, values = train_steps
        loss_axis.plot([step / steps_per_epoch for step in steps], values, color="0.75", linewidth=0.8,
                       label="train (per iteration)")
    for tag, series in curves.items():
        if tag.startswith("Loss/"):
            _draw(loss_axis, series, tag.split("/", 1)[1])
        elif tag.startswith("Accuracy/"):
            _draw(accuracy_axis, _percent(series), tag.split("/", 1)[1])
    return _finish_loss_accuracy(figure, loss_axis, accuracy_axis, "", title, path)


def plot_comparison(path: Path, title: str, runs: dict[str, dict[str, Series]]) -> Path:
    """Test loss (left) and test accuracy (right) of several runs on shared axes; ``runs``: label -> curves."""
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.4))
    for label, curves in runs.items():
        for tag, axis, percent in (("Loss/test", loss_axis, False), ("Accuracy/test", accuracy_axis, True)):
            if tag in curves:
                _draw(axis, _percent(curves[tag]) if percent else curves[tag], label)
    return _finish_loss_accuracy(figure, loss_axis, accuracy_axis, "test ", title, path)


def plot_panels(path: Path, title: str, panels: Sequence[tuple[str, str, dict[str, Series], bool]]) -> Path:
    """One panel per entry ``(panel title, y label, label -> series, in percent)``, x in epochs."""
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows), squeeze=False)
    for axis, (panel_title, ylabel, curves, percent) in zip(axes.flat, panels):
        for label, series in curves.items():
            _draw(axis, _percent(series) if percent else series, label)
        axis.set(xlabel="epoch", ylabel=ylabel, title=panel_title)
        axis.grid(alpha=0.3)
        if len(curves) > 1:
            axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def plot_cmc(path: Path, title: str, curves: dict[str, Sequence[float]]) -> Path:
    """CMC curves (matching rate in % against rank k = 1..len), one per label."""
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for label, cmc in curves.items():
        ranks = list(range(1, len(cmc) + 1))
        axis.plot(ranks, [100 * value for value in cmc], marker=".", label=label)
    axis.set(xlabel="rank k", ylabel="matching rate (%)", title=title, ylim=(0, 101))
    axis.set_xscale("log")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    return _save(figure, path)


def plot_grid_table(path: Path, title: str, row_label: str, rows: Sequence[str], columns: Sequence[str],
                    values: dict[tuple[str, str], float], diverged: set[tuple[str, str]]) -> Path:
    """Test accuracy (%) against the learning rate, one line per table row; diverged cells as crosses."""
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    positions = {column: index for index, column in enumerate(columns)}
    for row in rows:
        points = [(positions[column], 100 * values[(row, column)]) for column in columns if (row, column) in values]
        if points:
            axis.plot(*zip(*points), marker="o", label=f"{row_label} {row}")
        crosses = [(positions[column], 100 * values[(row, column)]) for column in columns
                   if (row, column) in diverged and (row, column) in values]
        if crosses:
            axis.scatter(*zip(*crosses), marker="x", s=60, color="red", zorder=3)
    axis.set_xticks(range(len(columns)), [str(column) for column in columns])
    axis.set(xlabel="learning rate λ (× = diverged)", ylabel="test accuracy (%)", title=title, ylim=(0, 101))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)
