"""Ex1 Q3: the SummaryWriter calls, read back from the event file the script wrote.

Q2's ``Net``/``train``/``test`` are replaced by stand-ins: ``train``'s k-th call returns ``(10 + k, k / 100)``,
``test`` returns a fingerprint of the data it was given (the test split holds only 7s), so every summary is
checked value by value, epoch by epoch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from .checks import close

RUN_FOLDER = "runs/q3_summaries/graded"
TAGS = ("Loss/train", "Accuracy/train", "Loss/test", "Accuracy/test")


@pytest.fixture(scope="module")
def scalars(run) -> dict[str, dict[int, float]]:
    """Every scalar of the event files under the run folder, as {tag: {step: value}} (copied here first)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run.probe("ex1_q3_run")
    events = [path for path in run.child_files(RUN_FOLDER) if Path(path).name.startswith("events.out.tfevents")]
    found: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for index, relpath in enumerate(events):
            data = run.child_bytes(relpath, max_bytes=8 << 20)
            if data is None:
                continue
            copy = Path(folder) / f"{index}" / Path(relpath).name
            copy.parent.mkdir()
            copy.write_bytes(data)
            accumulator = EventAccumulator(str(copy), size_guidance={"scalars": 0})
            accumulator.Reload()
            for tag in accumulator.Tags()["scalars"]:
                found.setdefault(tag, {}).update({event.step: event.value for event in accumulator.Scalars(tag)})
    return found


def curve(scalars: dict[str, dict[int, float]], tag: str, epochs: int) -> list[float]:
    assert tag in scalars, f"no {tag!r} summary in {RUN_FOLDER} (found: {len(scalars)} tags)"
    steps = sorted(scalars[tag])
    assert steps == list(range(1, epochs + 1)), \
        f"{tag}: logged at steps {steps[:8]}, expected one value per epoch at steps 1..{epochs}"
    return [scalars[tag][step] for step in steps]


def test_training_summaries_per_epoch(run, scalars):
    """Loss/train and Accuracy/train: the values train() returned, at global_step = epoch"""
    epochs = run.inputs["epochs"]
    for index, value in enumerate(curve(scalars, "Loss/train", epochs), start=1):
        close(value, 10.0 + index, f"Loss/train at epoch {index}", atol=1e-4)
    for index, value in enumerate(curve(scalars, "Accuracy/train", epochs), start=1):
        close(value, index / 100, f"Accuracy/train at epoch {index}", atol=1e-5)


def test_test_summaries_on_the_test_split(run, scalars):
    """Loss/test and Accuracy/test: what test() returned on the test split (not training or validation data)"""
    epochs, count = run.inputs["epochs"], run.inputs["test_count"]
    for index, value in enumerate(curve(scalars, "Loss/test", epochs), start=1):
        close(value, count / 1000 + 7.0, f"Loss/test at epoch {index} (computed on the test split?)", atol=1e-4)
    for index, value in enumerate(curve(scalars, "Accuracy/test", epochs), start=1):
        close(value, 1.0, f"Accuracy/test at epoch {index} (computed on the test split?)", atol=1e-5)


def test_event_file_in_the_run_folder(run):
    """The summaries are written under <runs-dir>/q3_summaries/<run-name>"""
    run.probe("ex1_q3_run")
    events = [path for path in run.child_files(RUN_FOLDER) if Path(path).name.startswith("events.out.tfevents")]
    assert events, f"no TensorBoard event file under --runs-dir/q3_summaries/--run-name ({RUN_FOLDER})"
