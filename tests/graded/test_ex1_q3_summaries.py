"""Ex1 Q3: the training writes the four TensorBoard summaries the TP asks for."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from reference import mnist

pytestmark = pytest.mark.timeout(60, method="signal")
FILE = "exercise1/q3_summaries.py"
TAGS = ("Loss/train", "Accuracy/train", "Loss/test", "Accuracy/test")


@pytest.fixture(scope="module")
def dry_run(submission, tmp_path_factory):
    """Run ``main`` once with --dry-run in a fresh folder, on a tiny MNIST given by --data-root."""
    workdir = tmp_path_factory.mktemp("q3")
    data_root = mnist.write_tiny_mnist(workdir / "data")
    main = submission.get(FILE, "main")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        main(["--dry-run", "--device", "cpu", "--data-root", str(data_root), "--runs-dir", str(workdir / "runs"),
              "--run-name", "graded"])
    return workdir / "runs" / "q3_summaries" / "graded"


def read_scalars(run_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(run_dir.glob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file in runs/q3_summaries/<run-name> ({run_dir.name})"
    scalars: dict[str, list[float]] = {}
    for event_file in events:
        accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(event.value for event in accumulator.Scalars(tag))
    return scalars


def test_dry_run_writes_the_four_summaries(dry_run):
    """A --dry-run writes Loss/train, Accuracy/train, Loss/test, Accuracy/test (finite, accuracies in [0, 1] or %)."""
    scalars = read_scalars(dry_run)
    missing = [tag for tag in TAGS if tag not in scalars]
    assert not missing, f"TensorBoard tags missing: {', '.join(missing)} (found {', '.join(sorted(scalars)) or 'none'})"
    for tag in TAGS:
        assert all(math.isfinite(value) for value in scalars[tag]), f"{tag} has a non-finite value"
        if tag.startswith("Accuracy"):
            assert all(0.0 <= value <= 100.0 for value in scalars[tag]), f"{tag} outside [0, 100]: {scalars[tag]}"
        else:
            assert all(value >= 0.0 for value in scalars[tag]), f"{tag} is negative: {scalars[tag]}"


def test_dry_run_writes_metrics_json(dry_run):
    """A --dry-run writes metrics.json beside the event file, holding the four quantities."""
    path = dry_run / "metrics.json"
    assert path.is_file(), "no metrics.json beside the TensorBoard event file"
    text = json.dumps(json.loads(path.read_text()))
    missing = [tag for tag in TAGS if tag not in text]
    assert not missing, f"metrics.json does not mention {', '.join(missing)}"
