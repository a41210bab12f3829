"""Exercise 1: NumPy MLP gradients, the nn.Module MLP, the hand-written ResNet-18, summaries, resume, data."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from exercise1 import q1_numpy_mlp, q2_module_mlp, q3_summaries, q4_resnet
from utils.mnist import load_embedded_mnist, load_mnist
from utils.training import fit_classifier

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- Q1: NumPy MLP
def small_problem(seed: int = 0, n: int = 7) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = q1_numpy_mlp.init_params(seed)
    X = rng.random((n, 784))
    y = rng.integers(0, 10, n)
    return params, X, y


def test_numpy_gradients_match_finite_differences():
    params, X, y = small_problem()
    _, cache = q1_numpy_mlp.forward(params, X)
    grads = q1_numpy_mlp.backward(params, cache, y)
    rng = np.random.default_rng(1)
    eps = 1e-6
    for name in ("W1", "b1", "W2", "b2"):
        for _ in range(6):
            index = tuple(rng.integers(0, s) for s in params[name].shape)
            original = params[name][index]
            params[name][index] = original + eps
            loss_plus = q1_numpy_mlp.cross_entropy(q1_numpy_mlp.forward(params, X)[0], y)
            params[name][index] = original - eps
            loss_minus = q1_numpy_mlp.cross_entropy(q1_numpy_mlp.forward(params, X)[0], y)
            params[name][index] = original
            numeric = (loss_plus - loss_minus) / (2 * eps)
            assert grads[name][index] == pytest.approx(numeric, rel=1e-4, abs=1e-9), name


def test_numpy_gradients_match_torch_autograd():
    params, X, y = small_problem(seed=3)
    _, cache = q1_numpy_mlp.forward(params, X)
    grads = q1_numpy_mlp.backward(params, cache, y)
    weights = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    hidden = torch.sigmoid(torch.tensor(X) @ weights["W1"] + weights["b1"])
    loss = nn.functional.cross_entropy(hidden @ weights["W2"] + weights["b2"], torch.tensor(y))
    loss.backward()
    assert q1_numpy_mlp.cross_entropy(cache["probs"], y) == pytest.approx(loss.item(), rel=1e-10)
    for name, weight in weights.items():
        np.testing.assert_allclose(grads[name], weight.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_numpy_sgd_step_matches_torch_sgd():
    params, X, y = small_problem(seed=5)
    weights = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    optimizer = torch.optim.SGD(weights.values(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    velocity: dict = {}
    for _ in range(3):
        _, cache = q1_numpy_mlp.forward(params, X)
        q1_numpy_mlp.sgd_momentum_step(params, q1_numpy_mlp.backward(params, cache, y), velocity, 0.1, 0.9, 1e-3)
        optimizer.zero_grad()
        hidden = torch.sigmoid(torch.tensor(X) @ weights["W1"] + weights["b1"])
        nn.functional.cross_entropy(hidden @ weights["W2"] + weights["b2"], torch.tensor(y)).backward()
        optimizer.step()
    for name, weight in weights.items():
        np.testing.assert_allclose(params[name], weight.detach().numpy(), rtol=1e-8, atol=1e-12)


def test_numpy_softmax_and_sigmoid_are_stable_for_extreme_inputs():
    z = np.array([[-1000.0, 0.0, 1000.0]])
    assert np.all(np.isfinite(q1_numpy_mlp.sigmoid(z)))
    np.testing.assert_allclose(q1_numpy_mlp.softmax(z), [[0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------- Q2: nn.Module MLP
def test_net_has_the_tp_layers():
    net = q2_module_mlp.Net()
    assert isinstance(net.FC1, nn.Linear) and tuple(net.FC1.weight.shape) == (128, 784)
    assert isinstance(net.FC2, nn.Linear) and tuple(net.FC2.weight.shape) == (10, 128)
    x = torch.rand(5, 1, 28, 28)
    expected = net.FC2(torch.sigmoid(net.FC1(x.reshape(5, 784))))
    torch.testing.assert_close(net(x), expected)
    torch.testing.assert_close(net(x.reshape(5, 784)), expected)


# ----------------------------------------------------------------------------- Q4: ResNet-18
def torchvision_resnet18(stem: str) -> nn.Module:
    reference = torchvision.models.resnet18(num_classes=10)
    if stem == "imagenet":
        reference.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    else:
        reference.conv1 = nn.Conv2d(1, 64, 3, stride=1, padding=1, bias=False)
        reference.maxpool = nn.Identity()
    return reference


@pytest.mark.parametrize("stem", q4_resnet.STEMS)
def test_resnet18_matches_torchvision_parameter_count_and_output(stem):
    model = q4_resnet.ResNet18(num_classes=10, in_channels=1, stem=stem)
    reference = torchvision_resnet18(stem)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) == count(reference)
    conv_shapes = lambda m: sorted(tuple(x.weight.shape) for x in m.modules() if isinstance(x, nn.Conv2d))  # noqa
    assert conv_shapes(model) == conv_shapes(reference)
    model.eval()
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_zero_init_residual_zeroes_what_torchvision_zeroes_and_blocks_start_as_identity():
    model = q4_resnet.build_model("resnet18", "imagenet", zero_init_residual=True).eval()
    reference = torchvision.models.resnet18(zero_init_residual=True)
    zeroed = lambda m: sorted(x.weight.numel() for x in m.modules()  # noqa: E731
                              if isinstance(x, nn.BatchNorm2d) and not x.weight.any())
    assert zeroed(model) == zeroed(reference) and len(zeroed(model)) == 8
    activations = torch.rand(2, 64, 7, 7)  # non-negative, as after a ReLU
    assert torch.equal(model.layer1[0](activations), activations)
    assert q4_resnet.build_model("resnet18", "imagenet").layer1[0].bn2.weight.all()


def test_resnet18_rejects_unknown_stem():
    with pytest.raises(ValueError, match="stem"):
        q4_resnet.ResNet18(stem="huge")


# ----------------------------------------------------------------------------- optimisation reduces the loss
def tiny_digits(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_embedded_mnist()
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data.train_labels), generator=generator)[:n]
    return data.train_images[index], data.train_labels[index]


@pytest.mark.parametrize("make_model, lr", [(q2_module_mlp.Net, 0.5),
                                            (lambda: q4_resnet.ResNet18(stem="imagenet"), 0.05)],
                         ids=["Net", "ResNet18"])
def test_a_few_steps_reduce_the_loss(make_model, lr):
    torch.manual_seed(0)
    images, labels = tiny_digits()
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_numpy_mlp_steps_reduce_the_loss():
    images, labels = tiny_digits()
    X, y = images.reshape(len(labels), -1).double().numpy(), labels.numpy()
    params, velocity = q1_numpy_mlp.init_params(0), {}
    first = q1_numpy_mlp.cross_entropy(q1_numpy_mlp.forward(params, X)[0], y)
    for _ in range(30):
        _, cache = q1_numpy_mlp.forward(params, X)
        q1_numpy_mlp.sgd_momentum_step(params, q1_numpy_mlp.backward(params, cache, y), velocity, 0.5, 0.9, 0.0)
    assert q1_numpy_mlp.cross_entropy(q1_numpy_mlp.forward(params, X)[0], y) < 0.7 * first


# ----------------------------------------------------------------------------- Q3: summaries
def test_q3_writes_the_four_summaries(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    q3_summaries.main(["--dry-run", "--runs-dir", str(tmp_path), "--run-name", "check", "--epochs", "2"])
    run = tmp_path / "q3_summaries" / "check"
    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"Loss/train", "Accuracy/train", "Loss/test", "Accuracy/test", "LearningRate"} <= tags
    # Per iteration: two dry-run batches in each of the two epochs.
    assert [event.step for event in accumulator.Scalars("Loss/train_step")] == [1, 2, 3, 4]
    assert [event.step for event in accumulator.Scalars("Accuracy/test")] == [1, 2]
    metrics = json.loads((run / "metrics.json").read_text())
    logged = accumulator.Scalars("Accuracy/test")[-1].value
    assert metrics["final"]["Accuracy/test"] == pytest.approx(logged, rel=1e-6)


# ----------------------------------------------------------------------------- checkpoints and resume
def test_resume_continues_at_the_next_epoch_with_identical_weights(tmp_path):
    images, labels = tiny_digits(48)

    def run(epochs: int, resume: bool, checkpoint: Path) -> nn.Module:
        torch.manual_seed(0)
        model = q2_module_mlp.Net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        fit_classifier(model, optimizer, images, labels, images, labels, epochs=epochs, batch_size=16, seed=3,
                       scheduler=scheduler, checkpoint_path=checkpoint, resume=resume, verbose=False)
        return model

    straight = run(3, False, tmp_path / "straight.pt")
    run(2, False, tmp_path / "interrupted.pt")
    state = torch.load(tmp_path / "interrupted.pt", weights_only=True)
    assert state["epoch"] == 2
    resumed = run(3, True, tmp_path / "interrupted.pt")
    assert torch.load(tmp_path / "interrupted.pt", weights_only=True)["epoch"] == 3
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_q4_dry_run_as_a_script_and_resume(tmp_path):
    common = [sys.executable, "exercise1/q4_resnet.py", "--dry-run", "--runs-dir", str(tmp_path / "runs"),
              "--checkpoint-dir", str(tmp_path / "ckpt"), "--run-name", "r"]
    result = subprocess.run(common, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "Test accuracy" in result.stdout
    checkpoint = tmp_path / "ckpt" / "q4_resnet" / "r.pt"
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    metrics = q4_resnet.main(common[2:] + ["--epochs", "2", "--resume"])
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2
    history = json.loads((tmp_path / "runs" / "q4_resnet" / "r" / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert set(metrics) >= {"Accuracy/test", "Loss/test"}


def test_q4_trains_the_sibling_architectures(tmp_path):
    metrics = q4_resnet.main(["--arch", "densenet", "--dry-run", "--runs-dir", str(tmp_path / "runs"),
                              "--checkpoint-dir", str(tmp_path / "ckpt"), "--run-name", "dense"])
    assert 0.0 <= metrics["Accuracy/test"] <= 1.0
    state = torch.load(tmp_path / "ckpt" / "q4_resnet" / "dense.pt", weights_only=True)
    assert state["config"]["arch"] == "densenet"


@pytest.mark.parametrize("script", [q1_numpy_mlp, q2_module_mlp], ids=["q1", "q2"])
def test_scripts_dry_run(script, tmp_path):
    script.main(["--dry-run", "--runs-dir", str(tmp_path), "--run-name", "d"])
    metrics = json.loads((tmp_path / script.__name__.split(".")[-1] / "d" / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and 0.0 <= metrics["final"]["Accuracy/test"] <= 1.0


# ----------------------------------------------------------------------------- data
def test_embedded_mnist_split_is_stratified_and_fixed():
    first, second = load_embedded_mnist(), load_embedded_mnist()
    assert first.train_images.shape == (4000, 1, 28, 28) and first.test_images.shape == (1000, 1, 28, 28)
    assert first.train_images.dtype == torch.float32
    assert 0.0 <= first.train_images.min() and first.train_images.max() <= 1.0
    assert torch.bincount(first.train_labels).tolist() == [400] * 10
    assert torch.bincount(first.test_labels).tolist() == [100] * 10
    assert torch.equal(first.test_images, second.test_images) and torch.equal(first.train_labels, second.train_labels)
    # No image is in both splits.
    train_rows = {row.numpy().tobytes() for row in first.train_images.reshape(4000, -1)}
    assert not any(row.numpy().tobytes() in train_rows for row in first.test_images.reshape(1000, -1))


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as MNIST ships it: magic (0, 0, 8 = uint8, ndim), big-endian sizes, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_fake_mnist(root: Path, n_train: int = 20, n_test: int = 10) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte", rng.integers(0, 10, n_train))
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte", rng.integers(0, 10, n_test))


def test_full_mnist_is_read_from_the_torchvision_layout(tmp_path):
    make_fake_mnist(tmp_path)
    data = load_mnist(str(tmp_path), quiet=True)
    assert data.train_images.shape == (20, 1, 28, 28) and data.test_labels.shape == (10,)
    raw = np.frombuffer((tmp_path / "MNIST/raw/train-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8)
    np.testing.assert_allclose(data.train_images.reshape(-1).numpy(), raw / 255.0, rtol=1e-6)


def test_bad_data_root_gives_a_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_mnist(str(tmp_path), quiet=True)
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)
    result = subprocess.run([sys.executable, "exercise1/q2_module_mlp.py", "--data-root", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error: --data-root") and "\n" not in result.stderr.strip()


def test_truncated_mnist_file_is_named(tmp_path):
    make_fake_mnist(tmp_path)
    broken = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    broken.write_bytes(broken.read_bytes()[:500])
    with pytest.raises(ValueError) as error:
        load_mnist(str(tmp_path), quiet=True)
    assert str(broken) in str(error.value) and "\n" not in str(error.value)
