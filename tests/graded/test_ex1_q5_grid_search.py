"""Ex1 Q5: the grid fills Tables 1 and 2, read from the CSV files it wrote.

Q4's ``ResNet18`` and Q2's ``train``/``test`` are replaced by stand-ins: each cell's model reports an accuracy
that identifies the cell's (learning rate, weight decay, batch size), plus ``mean label / 1000`` of the data
it was measured on (the test split holds only 7s). One cell's ``train`` returns a NaN loss.
"""

from __future__ import annotations

import csv
import io
import math
import re


from autograder.child.doubles_grid import grid_accuracy
from autograder.questions import GRID_TABLE1_BATCH, GRID_TABLE2_DECAY

CELL = re.compile(r"^\s*\**\s*([0-9.]+)\s*(%?)\s*\**\s*(\(?\s*diverged\s*\)?)?\s*\**\s*$", re.I)


def read_table(run, name: str) -> list[list[str]]:
    run.probe("ex1_q5_run")
    data = run.child_bytes(f"grid/{name}", max_bytes=1 << 20)
    assert data is not None, f"no {name} under --out (the grid must write table1.csv and table2.csv)"
    return [row for row in csv.reader(io.StringIO(data.decode("utf-8", "replace"))) if row]


def parse_cell(text: str, where: str) -> tuple[float, bool]:
    """(accuracy as a fraction, diverged?) of one CSV cell."""
    match = CELL.match(text)
    assert match, f"{where}: cell is not an accuracy (a number, optionally '%' and '(diverged)')"
    value = float(match.group(1))
    value = value / 100 if match.group(2) or value > 1.0 else value
    return value, bool(match.group(3))


def check_table(run, name: str, row_values: list[float], row_key: str) -> None:
    grid = run.inputs["grid"]
    fingerprints = {tuple(cell): value for cell, value in grid["fingerprints"]}
    rows = read_table(run, name)
    assert len(rows) == 1 + len(row_values), f"{name}: {len(rows) - 1} rows, expected {len(row_values)}"
    header = [float(value) for value in rows[0][1:]] if all(_is_number(v) for v in rows[0][1:]) else []
    assert header and all(math.isclose(a, b) for a, b in zip(header, grid["lrs"])) and len(header) == len(grid["lrs"]), \
        f"{name}: header must be the learning rates {grid['lrs']} (one column each, in that order)"
    for row, row_value in zip(rows[1:], row_values):
        assert _is_number(row[0]) and math.isclose(float(row[0]), row_value), \
            f"{name}: rows must be the {row_key}s {row_values} in that order"
        assert len(row) == 1 + len(grid["lrs"]), f"{name}: row {row_value} has {len(row) - 1} cells"
        for text, lr in zip(row[1:], grid["lrs"]):
            cell = (lr, GRID_TABLE2_DECAY, row_value) if row_key == "batch size" else (lr, row_value,
                                                                                       float(GRID_TABLE1_BATCH))
            got, _ = parse_cell(text, f"{name} {row_key} {row_value}, lr {lr}")
            expected = grid_accuracy(cell, 7.0, fingerprints)
            assert abs(got - expected) < 5e-4, \
                (f"{name} {row_key} {row_value}, lr {lr}: {got:.4f}, expected the test accuracy of the model trained "
                 f"with lr {lr}, weight decay {cell[1]}, batch size {int(cell[2])} ({expected:.4f})")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_table1_cells(run):
    """table1.csv: weight decay (rows) x learning rate (columns), batch 64, each cell its model's test accuracy"""
    check_table(run, "table1.csv", list(run.inputs["grid"]["weight_decays"]), "weight decay")


def test_table2_cells(run):
    """table2.csv: batch size (rows) x learning rate (columns), weight decay 0.001, each cell its test accuracy"""
    check_table(run, "table2.csv", [float(v) for v in run.inputs["grid"]["batch_sizes"]], "batch size")


def test_diverged_cell_is_marked(run):
    """The cell whose training loss is NaN is marked 'diverged', and only that one"""
    grid = run.inputs["grid"]
    lr, _, batch = grid["diverge"]
    rows = read_table(run, "table2.csv")
    marked = []
    for row in rows[1:]:
        for text, column_lr in zip(row[1:], grid["lrs"]):
            if parse_cell(text, "table2.csv")[1]:
                marked.append((float(row[0]), column_lr))
    assert marked == [(batch, lr)], \
        f"table2.csv marks {len(marked)} cell(s) diverged; expected exactly batch {int(batch)}, lr {lr}"
    for row in read_table(run, "table1.csv")[1:]:
        assert not any(parse_cell(text, "table1.csv")[1] for text in row[1:]), "table1.csv marks a cell diverged"


def test_each_cell_trained_once(run):
    """Each distinct cell is trained once: the cells both tables share are not trained twice"""
    value = run.probe("ex1_q5_run")
    cells = [tuple(cell) for cell, _ in run.inputs["grid"]["fingerprints"]]
    trained = [tuple(cell) for cell in value["trained"]]
    for cell in cells:
        count = sum(all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(cell, other)) for other in trained)
        assert count == 1, (f"the cell lr {cell[0]}, weight decay {cell[1]}, batch {int(cell[2])} was trained "
                            f"{count} times, expected once")


