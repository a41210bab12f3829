"""Fixtures shared by the graded tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny graded workloads gain nothing from more, and on a shared or
    oversubscribed CPU two spinning OpenMP threads can run 10x slower than one. Module scope, so it also
    covers the module-scoped fixtures that run a script once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fixed_seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------- Exercise 2: one tiny training run
TINY_SIZE = (64, 32)  # height, width of the tiny Market images (the smallest a ResNet handles well)


@pytest.fixture(scope="session")
def tiny_market_root(tmp_path_factory):
    """A tiny Market-1501-layout folder (4 train identities x 4 images, 3 test identities, junk, distractors)."""
    from reference import market

    root = tmp_path_factory.mktemp("tiny_market")
    market.write_market_folder(root, market.tiny_layout(), size=TINY_SIZE)
    return root


def use_reference_dependencies(submission, monkeypatch) -> None:
    """Grade main.py on its own: the dataset (Q4), sampler (Q3) and triplet loss (Q2) it uses are the
    reference ones, so a mistake there costs points in its own question only."""
    from reference.market import ReferenceMarket1501
    from reference.sampler import ReferenceIdentitySampler
    from reference.triplet import ReferenceTripletLoss

    submission.use_reference(monkeypatch, "data.py", "Market1501", ReferenceMarket1501)
    submission.use_reference(monkeypatch, "utils/RandomSampler.py", "RandomIdentitySampler", ReferenceIdentitySampler)
    submission.use_reference(monkeypatch, "utils/TripletLoss.py", "TripletLoss", ReferenceTripletLoss)


@pytest.fixture(scope="session")
def reid_run(submission, tiny_market_root, tmp_path_factory):
    """``python main.py --dry-run`` on the tiny set (ResNet-18, 64x32, one P x K batch of 4 x 4), run once.

    Returns the folder it ran in, the checkpoint it wrote and the results it returned.
    """
    workdir = tmp_path_factory.mktemp("reid_run")
    main = submission.get("main.py", "main")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        use_reference_dependencies(submission, patch)
        torch.set_num_threads(1)
        try:
            results = main([
                "--dry-run", "--data-root", str(tiny_market_root), "--device", "cpu", "--seed", "0",
                "--backbone", "resnet18", "--height", str(TINY_SIZE[0]), "--width", str(TINY_SIZE[1]),
                "--batch-size", "16", "--num-instances", "4", "--workers", "1",
                "--runs-dir", str(workdir / "runs"), "--checkpoint-dir", str(workdir / "checkpoints"),
                "--run-name", "graded",
            ])
        finally:
            torch.set_num_threads(threads)
    checkpoints = sorted((workdir / "checkpoints").rglob("*.pt"))
    return {"workdir": workdir, "results": results, "checkpoints": checkpoints}
