"""The report builder: from real ``--dry-run`` runs of the scripts to report.md, report.html and the zip.

The runs are produced once for the module by the scripts' own ``main`` (tiny data: 200/100 random digits
in MNIST's file layout, two batches each, a synthetic Market-1501 of 8 identities, a grid of one cell
per table), then the report and zip are built from them; one test runs ``python report/build.py`` as a
script. Expected numbers are read back from the logged files by the test itself (``json``, ``csv``,
``tbparse``), never through the builder's readers.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
NAME, FIRST_NAME = "Dupont", "Pierre"
ARCHIVE = f"{NAME}-{FIRST_NAME}-travail-TP1"
# Files planted under runs/ that the build must name (one line each) and skip.
PLANTED = {
    "top_level_file": "notes.txt",
    "corrupt_events": "q3_summaries/r1/events.out.tfevents.999.corrupt",
    "corrupt_metrics": "q4_resnet/broken/metrics.json",
    "fake_png": "q1_numpy_mlp/r1/plot.png",
    "foreign": "main/reid/slides.docx",
}


# ----------------------------------------------------------------------------- the runs, once
def write_tiny_mnist(root: Path, n_train: int = 200, n_test: int = 100) -> Path:
    """Random digits in torchvision's raw MNIST layout (IDX files): a dry run then evaluates 100 images, not 1,000."""
    import numpy as np

    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, shape in (("train-images-idx3-ubyte", (n_train, 28, 28)), ("train-labels-idx1-ubyte", (n_train,)),
                        ("t10k-images-idx3-ubyte", (n_test, 28, 28)), ("t10k-labels-idx1-ubyte", (n_test,))):
        array = rng.integers(0, 256 if len(shape) == 3 else 10, shape, dtype=np.uint8)
        header = bytes([0, 0, 0x08, len(shape)]) + b"".join(size.to_bytes(4, "big") for size in shape)
        (raw / name).write_bytes(header + array.tobytes())
    return root


def run_script(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def produce_runs_and_report(root: Path) -> dict:
    """Dry runs of every script into ``root/runs``, bad files planted beside them, then the report and zip."""
    import evaluation_tp
    import main as reid_main
    from exercise1 import q1_numpy_mlp, q2_module_mlp, q3_summaries, q4_resnet, q5_grid_search
    from exercise2 import q1_plot_dataset
    from report import build
    from utils.synthetic_market import generate_market

    runs, checkpoints, market = root / "runs", root / "checkpoints", root / "market"
    mnist = write_tiny_mnist(root / "mnist")
    common = ["--dry-run", "--runs-dir", str(runs), "--checkpoint-dir", str(checkpoints), "--data-root", str(mnist)]
    q1_numpy_mlp.main([*common, "--run-name", "r1"])
    q2_module_mlp.main([*common, "--run-name", "old", "--seed", "0"])
    q2_module_mlp.main([*common, "--run-name", "new", "--seed", "1"])  # written last: the latest
    q3_summaries.main([*common, "--run-name", "r1", "--epochs", "2"])
    q4_resnet.main([*common, "--run-name", "r1"])
    q5_grid_search.main(["--dry-run", "--table", "both", "--lrs", "0.1", "--weight-decays", "0.001", "--batch-sizes",
                         "64", "--workers", "1", "--train-size", "100", "--out", str(runs / "grid"),
                         "--data-root", str(mnist)])

    generate_market(market, ids=8, images_per_id=6)
    reid = ["--dry-run", "--data-root", str(market), "--runs-dir", str(runs), "--device", "cpu"]
    reid_main.main([*reid, "--run-name", "reid", "--checkpoint-dir", str(checkpoints), "--batch-size", "16",
                    "--height", "32", "--width", "16", "--feat-dim", "32"])
    evaluation_tp.main([*reid, "--run-name", "eval", "--checkpoint", str(checkpoints / "main" / "reid.pt")])
    evaluation_tp.main([*reid, "--run-name", "raw", "--raw-pixels", "--height", "32", "--width", "16"])
    q1_plot_dataset.main(["--dry-run", "--data-root", str(market), "--runs-dir", str(runs), "--run-name", "stats"])

    (runs / PLANTED["top_level_file"]).write_text("not a run\n")
    (runs / PLANTED["corrupt_events"]).write_bytes(b"this is not a TFRecord stream")
    (runs / PLANTED["corrupt_metrics"]).parent.mkdir(parents=True)
    (runs / PLANTED["corrupt_metrics"]).write_text('{"script": "q4_resnet", "history": [')
    (runs / PLANTED["fake_png"]).write_text("not an image")
    (runs / PLANTED["foreign"]).write_bytes(b"PK\x03\x04 slides")

    out = root / "build"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        build.main(["--runs", str(runs), "--out", str(out), "--zip", "--name", NAME, "--first-name", FIRST_NAME])
    return {"runs": runs, "out": out, "stdout": printed.getvalue()}


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The runs, the report and the zip, produced once for every test of this file."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread mostly waits, on a machine shared with other jobs
    try:
        yield produce_runs_and_report(tmp_path_factory.mktemp("report"))
    finally:
        torch.set_num_threads(threads)


def report_text(logged: dict[str, Path]) -> str:
    return (logged["out"] / "report.md").read_text(encoding="utf-8")


def section(markdown: str, heading_start: str) -> str:
    """The text of the ``###`` section whose heading starts with ``heading_start``, up to the next ``##``/``###``."""
    match = re.search(rf"^### {re.escape(heading_start)}.*?$(.*?)(?=^##(?:#)? |\Z)", markdown, re.M | re.S)
    assert match, f"no section {heading_start!r}"
    return match.group(1)


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table of ``text`` as rows of cells (the separator row left out)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(re.fullmatch(r"-+", cell) for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def metrics(logged: dict[str, Path], script: str, run: str) -> dict:
    return json.loads((logged["runs"] / script / run / "metrics.json").read_text())


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


# ----------------------------------------------------------------------------- numbers
def test_exercise1_table_matches_the_logged_final_values(logged):
    summary = markdown_tables(section(report_text(logged), "Final accuracies of Exercise 1"))[0]
    header, rows = summary[0], {row[0]: row for row in summary[1:]}
    expected = {"Q1 NumPy MLP": ("q1_numpy_mlp", "r1"), "Q2 nn.Module MLP": ("q2_module_mlp", "new"),
                "Q3 MLP + summaries": ("q3_summaries", "r1"), "Q4 ResNet-18": ("q4_resnet", "r1")}
    assert set(rows) == set(expected)
    for question, (script, run) in expected.items():
        final = metrics(logged, script, run)["final"]
        row = dict(zip(header, rows[question]))
        assert row["run"] == f"`{run}` (dry run)"
        assert row["train accuracy (%)"] == pct(final["Accuracy/train"])
        assert row["test accuracy (%)"] == pct(final["Accuracy/test"])
        assert row["test loss"] == f"{final['Loss/test']:.4f}"
        assert row["epochs"] == str(len(metrics(logged, script, run)["history"]))


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # inside tbparse, with recent pandas
def test_tensorboard_events_agree_with_the_report(logged):
    from tbparse import SummaryReader

    text = report_text(logged)
    for script, heading in (("q3_summaries", "Q3 — "), ("q4_resnet", "Q4 — ")):
        scalars = SummaryReader(str(logged["runs"] / script / "r1"), pivot=False).scalars
        body = section(text, heading)
        for tag in ("Accuracy/test", "Accuracy/train"):
            last = scalars[scalars.tag == tag].sort_values("step").value.iloc[-1]
            assert f"{pct(last)} %" in body, (script, tag)
        if script == "q3_summaries":
            listed = re.search(r"Tags in its TensorBoard event file: (.*)\.", body).group(1)
            assert sorted(re.findall(r"`([^`]+)`", listed)) == sorted(set(scalars.tag))


def test_numpy_and_module_comparison_uses_both_runs(logged):
    rows = {row[0]: row for row in markdown_tables(section(report_text(logged), "Q2 — "))[0]}
    numpy_final, module_final = (metrics(logged, "q1_numpy_mlp", "r1")["final"],
                                 metrics(logged, "q2_module_mlp", "new")["final"])
    assert rows["Accuracy/test (%)"][1:3] == [pct(numpy_final["Accuracy/test"]), pct(module_final["Accuracy/test"])]
    assert rows["Loss/train"][1:3] == [f"{numpy_final['Loss/train']:.4f}", f"{module_final['Loss/train']:.4f}"]


def test_grid_tables_are_the_csv_cells_in_the_tp_layout(logged):
    body = section(report_text(logged), "Q5 — ")
    tables = markdown_tables(body)
    assert len(tables) == 2
    for number, table in zip((1, 2), tables):
        with open(logged["runs"] / "grid" / f"table{number}.csv", newline="") as handle:
            rows = list(csv.reader(handle))
        corner = "weight decay \\ λ" if number == 1 else "batch size \\ λ"
        assert table[0] == [corner, *rows[0][1:]]
        for markdown_row, csv_row in zip(table[1:], rows[1:]):
            assert [cell.strip("*") for cell in markdown_row] == csv_row
        assert len(table) == len(rows)


def test_reid_tables_match_results_json(logged):
    text = report_text(logged)
    trained = json.loads((logged["runs"] / "main" / "reid" / "results.json").read_text())
    reloaded = json.loads((logged["runs"] / "evaluation_tp" / "eval" / "results.json").read_text())
    raw = json.loads((logged["runs"] / "evaluation_tp" / "raw" / "results.json").read_text())
    q6 = markdown_tables(section(text, "Q6 — Training"))[0]
    assert q6[1][1:5] == [pct(trained[key]) for key in ("rank1", "rank5", "rank10", "mAP")]
    q7 = {row[0]: row for row in markdown_tables(section(text, "Q7 — "))[0][1:]}
    assert q7["checkpoint reloaded by evaluation_tp.py"][1:7] == [
        *(pct(reloaded[key]) for key in ("rank1", "rank5", "rank10", "mAP")), str(reloaded["num_query"]),
        str(reloaded["num_gallery"])]
    assert q7["raw pixels, nearest neighbour (no learning)"][1] == pct(raw["rank1"])
    statistics = json.loads((logged["runs"] / "q1_plot_dataset" / "stats" / "statistics.json").read_text())
    dataset = {row[0]: row for row in markdown_tables(section(text, "Q1 — The dataset"))[0][1:]}
    for split, values in statistics["splits"].items():
        assert dataset[split][1:] == [str(values[name]) for name in
                                      ("identities", "images", "cameras", "distractors", "junk")]


def test_latest_run_is_used_unless_run_names_one(logged, tmp_path):
    from report import build

    assert "`new` (dry run)" in section(report_text(logged), "Final accuracies")
    build.main(["--runs", str(logged["runs"]), "--out", str(tmp_path), "--run", "q2_module_mlp/old"])
    summary = section((tmp_path / "report.md").read_text(), "Final accuracies")
    old_final = metrics(logged, "q2_module_mlp", "old")["final"]
    row = next(row for row in markdown_tables(summary)[0] if row[0] == "Q2 nn.Module MLP")
    assert row[1] == "`old` (dry run)" and row[4] == pct(old_final["Accuracy/test"])


# ----------------------------------------------------------------------------- files
def test_html_embeds_every_figure(logged):
    out = logged["out"]
    markdown_figures = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", report_text(logged))
    on_disk = sorted(f"figures/{path.name}" for path in (out / "figures").iterdir())
    assert sorted(markdown_figures) == on_disk
    assert {"figures/ex1_q2_curves.png", "figures/ex1_q3_curves.png", "figures/ex1_q4_curves.png",
            "figures/ex1_q2_numpy_vs_module.png", "figures/ex2_q1_identities_by_camera.png",
            "figures/ex2_q6_training.png", "figures/ex2_q7_cmc.png", "figures/ex2_q7_ranked_list.png"} <= set(on_disk)
    html = (out / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img\b[^>]*\bsrc="([^"]+)"', html)
    assert len(sources) == len(markdown_figures)
    embedded = sorted(base64.b64decode(source.split(",", 1)[1]) for source in sources)
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert embedded == sorted((out / name).read_bytes() for name in markdown_figures)
    assert "figures/" not in re.sub(r"<code>.*?</code>", "", html)


def test_bad_files_under_runs_are_named_once_and_skipped(logged):
    # Other notices may name answer placeholders the one-cell grid cannot fill: only files under runs/ count here.
    notices = [line for line in logged["stdout"].splitlines() if line.startswith(f"notice: skipped {logged['runs']}")]
    for planted in PLANTED.values():
        assert sum(str(logged["runs"] / planted) in line for line in notices) == 1, planted
    assert len(notices) == len(PLANTED)
    assert "`broken`" not in report_text(logged)


def test_missing_results_name_their_command(tmp_path):
    empty = tmp_path / "runs"
    result = run_script("report/build.py", "--runs", str(empty), "--out", str(tmp_path / "out"))
    assert "0 run(s) read" in result.stdout
    text = (tmp_path / "out" / "report.md").read_text()
    for heading, command in (("Q1 — The NumPy MLP", "python exercise1/q1_numpy_mlp.py"),
                             ("Q2 — ", "python exercise1/q2_module_mlp.py"),
                             ("Q3 — ", "python exercise1/q3_summaries.py"),
                             ("Q4 — ", "python exercise1/q4_resnet.py"),
                             ("Q1 — The dataset", "python exercise2/q1_plot_dataset.py"),
                             ("Q6 — Training", "python main.py"),
                             ("Q7 — ", "python evaluation_tp.py")):
        body = section(text, heading)
        assert f"**Not run yet:**" in body and f"`{command} --runs-dir {empty}`" in body, heading
        assert (REPO / command.split()[1]).is_file()
    assert f"`python exercise1/q5_grid_search.py --out {empty}/grid`" in section(text, "Q5 — ")
    assert f"`python evaluation_tp.py --raw-pixels --runs-dir {empty}`" in section(text, "Q7 — ")
    assert "<img" not in (tmp_path / "out" / "report.html").read_text()


# ----------------------------------------------------------------------------- the zip
def test_zip_holds_sources_and_report_and_nothing_else(logged):
    archive = logged["out"] / f"{ARCHIVE}.zip"
    names = zipfile.ZipFile(archive).namelist()
    assert all(name.startswith(f"{ARCHIVE}/") for name in names)
    relative = {name[len(ARCHIVE) + 1:] for name in names}
    tracked = subprocess.run(["git", "ls-files", "*.py", "*.md", "requirements.txt", "pytest.ini"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    assert {path for path in tracked if (REPO / path).is_file()} <= relative
    figures = {f"figures/{path.name}" for path in (logged["out"] / "figures").iterdir()}
    assert {"report.md", "report.html", "report/build.py", "data.py"} | figures <= relative
    for name in relative:
        assert not name.startswith(("data/", "runs/", "checkpoints/", "grades/", "report/build/")), name
        assert "__pycache__" not in name and "events.out.tfevents" not in name, name
        assert not name.endswith((".pt", ".pyc", ".zip", ".log")), name
    with zipfile.ZipFile(archive) as opened:
        assert opened.read(f"{ARCHIVE}/report.md") == (logged["out"] / "report.md").read_bytes()
    listing = logged["stdout"]
    assert f"{ARCHIVE}.zip" in listing and f"{len(names)} files" in listing
    assert all(name in listing for name in names)


def test_zip_from_a_fresh_tree_holds_exactly_its_sources(logged, tmp_path, capsys):
    from report import build

    clone = tmp_path / "clone"
    sources = ["main.py", "data.py", "utils/io.py", "exercise1/q1_numpy_mlp.py", "README.md", "requirements.txt",
               "pytest.ini", ".gitignore", ".ci/run", "report/build.py", "report/answers/ex1_q1.md"]
    left_out = ["data/MNIST/raw/train-images-idx3-ubyte", "data/helper.py", "runs/q3/r/metrics.json",
                "runs/q3/r/events.out.tfevents.1.host", "checkpoints/main/r.pt", "grades/results.json",
                "__pycache__/main.cpython-312.pyc", "utils/__pycache__/io.cpython-312.pyc", ".git/config",
                ".pytest_cache/v/cache/nodeids", "venv/pyvenv.cfg", "venv/lib/site.py", "model.pt",
                "events.out.tfevents.2.host", "report/build/report.md", "report/build/figures/old.png",
                "Dupont-Pierre-travail-TP1.zip"]
    for path in sources + left_out:
        (clone / path).parent.mkdir(parents=True, exist_ok=True)
        (clone / path).write_text(f"content of {path}\n")
    out = clone / "report" / "build"
    build.main(["--runs", str(logged["runs"]), "--out", str(out), "--source-root", str(clone), "--zip", "--name", NAME,
                "--first-name", FIRST_NAME])
    printed = capsys.readouterr().out
    names = zipfile.ZipFile(out / f"{ARCHIVE}.zip").namelist()
    figures = sorted(f"figures/{path.name}" for path in (out / "figures").iterdir())
    assert sorted(names) == sorted(f"{ARCHIVE}/{path}" for path in sources + ["report.md", "report.html", *figures])
    assert "old.png" not in " ".join(figures)  # a figure of an earlier build is not carried over
    size = (out / f"{ARCHIVE}.zip").stat().st_size
    assert re.search(rf"{ARCHIVE}\.zip \(\d+(\.\d)? (B|KiB|MiB), {len(names)} files\)", printed)
    assert size > 0 and all(name in printed for name in names)


@pytest.mark.parametrize("names", [["--name", "Dupont"], ["--name", "Dupont", "--first-name", "Pi/erre"]])
def test_zip_needs_both_names(tmp_path, names):
    from report import build

    with pytest.raises(SystemExit) as error:
        build.main(["--runs", str(tmp_path), "--out", str(tmp_path), "--zip", *names])
    assert str(error.value).startswith("error: --first-name") and "\n" not in str(error.value)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- Q5 from a finished grid
GRID_TABLE1 = """weight_decay \\ lr,1.0,0.1,0.01,0.001
0.1,9.80 (diverged),11.35,85.10,60.00
0.01,10.28 (diverged),97.40,96.90,80.20
0.001,failed,98.10,98.10,90.00
"""
GRID_TABLE2 = """batch_size \\ lr,1.0,0.1,0.01,0.001
5,9.80 (diverged),10.28 (diverged),97.90,96.00
64,10.28 (diverged),98.10,98.30,91.00
200,11.35,97.20,95.00,70.10
"""
ANSWER = ("# Q5\n<!-- placeholders: {t1_best_lr} -->\n"
          "Table 1 peaks at λ = {t1_best_lr} with weight decay {t1_best_wd} "
          "({t1_best_accuracy} %); {t1_diverged_count} cells diverged: {t1_diverged_cells}. Table 2: batch "
          "{t2_best_bs} at λ = {t2_best_lr}; cell {t2_bs5_lr0_01}. A set {0.1, 0.01} stays. Unknown: {not_a_field}.\n")


def test_q5_tables_and_comment_are_filled_from_the_grid(tmp_path):
    from report import build

    runs, clone = tmp_path / "runs", tmp_path / "clone"
    (runs / "grid").mkdir(parents=True)
    (runs / "grid" / "table1.csv").write_text(GRID_TABLE1)
    (runs / "grid" / "table2.csv").write_text(GRID_TABLE2)
    # The grid names each table's best cell, chosen on validation (the CSV holds test accuracies only).
    (runs / "grid" / "results.json").write_text(json.dumps({"tables": {
        "table1": {"best": {"weight_decay": 0.001, "lr": 0.01, "val_accuracy": 0.985, "test_accuracy": 0.981}},
        "table2": {"best": {"batch_size": 64, "lr": 0.01, "val_accuracy": 0.99, "test_accuracy": 0.983}}}}))
    (clone / "report" / "answers").mkdir(parents=True)
    (clone / "report" / "answers" / "ex1_q5.md").write_text(ANSWER)
    build.main(["--runs", str(runs), "--out", str(tmp_path / "out"), "--source-root", str(clone)])
    body = section((tmp_path / "out" / "report.md").read_text(), "Q5 — ")
    lines = [line for line in body.splitlines() if line.startswith("|")]
    assert lines[:5] == [
        "| weight decay \\ λ | 1.0 | 0.1 | 0.01 | 0.001 |",
        "|---|---|---|---|---|",
        "| 0.1 | 9.80 (diverged) | 11.35 | 85.10 | 60.00 |",
        "| 0.01 | 10.28 (diverged) | 97.40 | 96.90 | 80.20 |",
        "| 0.001 | failed | 98.10 | **98.10** | 90.00 |",
    ]
    assert "| 64 | 10.28 (diverged) | 98.10 | **98.30** | 91.00 |" in lines
    # The best cell is the one results.json names, not a tie on the test accuracy.
    assert ("Table 1 peaks at λ = 0.01 with weight decay 0.001 (98.10 %); 2 cells diverged: λ = 1.0 with weight "
            "decay 0.1, λ = 1.0 with weight decay 0.01. Table 2: batch 64 at λ = 0.01; cell 97.90. "
            "A set {0.1, 0.01} stays. Unknown: **?**.") in body
    assert "placeholders" not in body


# ----------------------------------------------------------------------------- labs and unknown scripts
def write_lab_run(runs: Path, script: str, run: str, config: dict, results: dict) -> None:
    """A run in the documented layout, written by the project's own RunLogger: two epochs, results, a PNG."""
    from PIL import Image

    from utils.io import write_json_atomic
    from utils.training import RunLogger

    logger = RunLogger(runs, script, run, config)
    for epoch, loss in ((1, 0.9), (2, 0.5)):
        logger.log_epoch(epoch, {"Loss/train": loss, "Accuracy/test": 1 - loss / 2})
    logger.close()
    write_json_atomic(logger.directory / "results.json", results)
    Image.new("RGB", (8, 8), "white").save(logger.directory / "errors.png")


def test_labs_and_unknown_scripts_get_a_section(tmp_path):
    import time

    from report import build

    runs = tmp_path / "runs"
    write_lab_run(runs, "facenet_knn", "a", {"triplets": "random"}, {"accuracy_test": 0.5, "k": 5})
    write_lab_run(runs, "facenet_knn", "b", {"triplets": "batch_hard"}, {"accuracy_test": 0.875, "k": 5})
    time.sleep(0.01)  # "latest" is by modification time
    write_lab_run(runs, "facenet_knn", "c", {"triplets": "random"}, {"accuracy_test": 0.625, "k": 3})
    write_lab_run(runs, "brand_new_lab", "r1", {}, {"accuracy_test": 0.25, "auc": 0.75})
    write_lab_run(runs, "q4_resnet", "resnet", {"arch": "resnet18"}, {})
    time.sleep(0.01)
    write_lab_run(runs, "q4_resnet", "dense", {"arch": "densenet"}, {})  # newer, but not the Q4 network
    # A lab that trains several methods logs each to <run>/<method>/ and summarises them in <run>/results.json.
    write_lab_run(runs, "embeddings_2d", "r1/softmax", {}, {"accuracy_test_1nn": 0.5})
    write_lab_run(runs, "embeddings_2d", "r1/siamese", {}, {"accuracy_test_1nn": 0.75})
    (runs / "embeddings_2d" / "r1" / "results.json").write_text(json.dumps(
        {"data": "tiny", "methods": {"softmax": {"accuracy": 0.5, "f1": 0.25}, "siamese": {"accuracy": 0.75}}}))
    build.main(["--runs", str(runs), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "report.md").read_text()

    facenet = section(text, "FaceNet triplet embedding")
    rows = {row[0]: row for row in markdown_tables(facenet)[0]}
    assert rows["variant"] == ["variant", "run", "accuracy_test (%)", "k"]
    assert rows["triplets = random"] == ["triplets = random", "`c`", "62.50", "3"]
    assert rows["triplets = batch_hard"] == ["triplets = batch_hard", "`b`", "87.50", "5"]
    assert facenet.count("figures/lab_facenet_") == 4  # per mode: the curves and errors.png

    other = section(text, "`brand_new_lab`")
    assert markdown_tables(other)[0] == [["quantity", "value"], ["accuracy_test (%)", "25.00"], ["auc", "0.75"]]
    assert "figures/other_brand_new_lab_curves.png" in other and "figures/other_brand_new_lab_errors.png" in other
    assert "Siamese face verification (network C): `python exercise2/siamese_verification.py --image-size 32" in text

    assert "Run `" + (runs / "q4_resnet" / "resnet").as_posix() in section(text, "Q4 — ResNet-18")
    architectures = {row[0]: row for row in markdown_tables(section(text, "DenseNet and ResNeXt"))[0]}
    assert architectures["densenet"][1:4] == ["`dense`", "2", "75.00"]  # Accuracy/test = 1 - 0.5 / 2
    assert architectures["resnet18"][1] == "`resnet`"

    methods = section(text, "Online mining and 2-D embeddings")
    # The written answers come first (their figures unfilled here: "**?**"), then the run's own table.
    assert [["methods", "accuracy (%)", "f1"], ["softmax", "50.00", "0.25"],
            ["siamese", "75.00", "-"]] in markdown_tables(methods)
    assert "figures/lab_embeddings_2d_curves.png" in methods  # the two methods' curves, side by side
    runs_used = markdown_tables(text.split("## Runs used", 1)[1].split("\n## ", 1)[0])[0]
    listed = [row[1] for row in runs_used if "embeddings_2d" in row[1]]
    assert listed == [f"`{(runs / 'embeddings_2d' / 'r1').as_posix()}`"]  # one run, its methods inside it
