"""Exercise 1: NumPy MLP gradients, Q1 = Q2, the TP's train/test loops, summaries, the hand-written ResNet-18."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from exercise1 import q1_numpy_mlp, q2_module_mlp, q3_summaries, q4_resnet
from test_mnist_data import offline_single_thread, write_tiny_mnist  # noqa: F401 (autouse fixture)
from utils.mnist import load_embedded_mnist

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


# ----------------------------------------------------------------------------- Q1 = Q2
def net_as_params(net: nn.Module) -> dict[str, np.ndarray]:
    """Q2's weights in Q1's layout (W1 is FC1's weight transposed)."""
    tensor = lambda value: value.detach().double().numpy()  # noqa: E731
    return {"W1": tensor(net.FC1.weight).T, "b1": tensor(net.FC1.bias),
            "W2": tensor(net.FC2.weight).T, "b2": tensor(net.FC2.bias)}


def test_q1_and_q2_start_from_the_same_weights_and_stay_together_after_a_step():
    torch.manual_seed(4)  # what Q2's main does before building Net
    net = q2_module_mlp.Net()
    params = q1_numpy_mlp.init_params(4)
    for name, value in net_as_params(net).items():
        np.testing.assert_array_equal(params[name], value)

    images, labels = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    loss, _ = q2_module_mlp.train(net, torch.device("cpu"), [(images, labels)], optimizer)
    probs, cache = q1_numpy_mlp.forward(params, images.reshape(16, -1).double().numpy())
    q1_numpy_mlp.sgd_momentum_step(params, q1_numpy_mlp.backward(params, cache, labels.numpy()), {}, 0.5, 0.9, 1e-3)
    assert loss == pytest.approx(q1_numpy_mlp.cross_entropy(probs, labels.numpy()), rel=1e-6)
    for name, value in net_as_params(net).items():
        np.testing.assert_allclose(params[name], value, rtol=1e-5, atol=1e-6)


def test_q1_and_q2_scripts_print_the_same_curves(tmp_path):
    mnist = write_tiny_mnist(tmp_path / "mnist", n_train=300, n_test=40)
    common = ["--data-root", str(mnist), "--runs-dir", str(tmp_path / "runs"), "--epochs", "3",
              "--batch-size", "32", "--lr", "0.5", "--seed", "2", "--run-name", "r"]
    q1_numpy_mlp.main(common)
    q2_module_mlp.main(common)
    histories = [json.loads((tmp_path / "runs" / script / "r" / "metrics.json").read_text())["history"]
                 for script in ("q1_numpy_mlp", "q2_module_mlp")]
    assert len(histories[0]) == len(histories[1]) == 3
    for numpy_row, torch_row in zip(*histories):
        for tag in ("Loss/train", "Loss/test"):
            assert numpy_row[tag] == pytest.approx(torch_row[tag], rel=1e-4), tag
        for tag in ("Accuracy/train", "Accuracy/test"):
            assert numpy_row[tag] == pytest.approx(torch_row[tag], abs=1 / 250), tag
    assert histories[0][-1]["Loss/train"] < histories[0][0]["Loss/train"]


# ----------------------------------------------------------------------------- Q2: Net, train, test
def test_net_has_the_tp_layers():
    net = q2_module_mlp.Net()
    assert isinstance(net.FC1, nn.Linear) and tuple(net.FC1.weight.shape) == (128, 784)
    assert isinstance(net.FC2, nn.Linear) and tuple(net.FC2.weight.shape) == (10, 128)
    assert sum(p.numel() for p in net.parameters()) == 784 * 128 + 128 + 128 * 10 + 10
    x = torch.rand(5, 1, 28, 28)
    expected = net.FC2(torch.sigmoid(net.FC1(x.reshape(5, 784))))
    torch.testing.assert_close(net(x), expected)
    torch.testing.assert_close(net(x.reshape(5, 784)), expected)


def test_train_is_one_epoch_of_steps_and_reports_per_sample_means():
    torch.manual_seed(0)
    net, reference = q2_module_mlp.Net(), q2_module_mlp.Net()
    reference.load_state_dict(net.state_dict())
    batches = [(torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,))) for n in (5, 3, 8)]  # unequal sizes
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    loss, accuracy = q2_module_mlp.train(net, torch.device("cpu"), batches, optimizer, scheduler)

    # Independent reference: plain gradient descent by hand, lr halved after every batch.
    lr, losses, correct = 0.1, [], 0
    for images, labels in batches:
        output = reference(images)
        batch_loss = nn.functional.cross_entropy(output, labels)
        grads = torch.autograd.grad(batch_loss, list(reference.parameters()))
        with torch.no_grad():
            for weight, grad in zip(reference.parameters(), grads):
                weight -= lr * grad
        lr /= 2
        losses.append(batch_loss.item() * len(labels))
        correct += int((output.argmax(1) == labels).sum())
    assert loss == pytest.approx(sum(losses) / 16, rel=1e-6) and accuracy == correct / 16
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 8)
    for a, b in zip(net.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)
    assert net.training


def test_test_is_the_mean_cross_entropy_and_accuracy_without_gradients():
    torch.manual_seed(1)
    net = q2_module_mlp.Net()
    batches = [(torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,))) for n in (4, 7)]
    before = [p.clone() for p in net.parameters()]
    loss, accuracy = q2_module_mlp.test(net, torch.device("cpu"), batches)
    per_sample = [(-torch.log_softmax(net(x[i:i + 1]), 1)[0, y[i]].item(), int(net(x[i:i + 1]).argmax() == y[i]))
                  for x, y in batches for i in range(len(y))]
    assert loss == pytest.approx(sum(p[0] for p in per_sample) / 11, rel=1e-6)
    assert accuracy == sum(p[1] for p in per_sample) / 11
    assert not net.training and all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


# ----------------------------------------------------------------------------- Q3: summaries
def test_q3_logs_exactly_what_train_and_test_return(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    mnist = write_tiny_mnist(tmp_path / "mnist", n_train=120, n_test=40)
    returned = {"train": [], "test": []}

    def recording(name, function):
        def wrapper(model, device, loader, *rest):
            result = function(model, device, loader, *rest)
            returned[name].append((result, sum(len(labels) for _, labels in loader)))
            return result
        return wrapper

    monkeypatch.setattr(q3_summaries, "train", recording("train", q2_module_mlp.train))
    monkeypatch.setattr(q3_summaries, "test", recording("test", q2_module_mlp.test))
    q3_summaries.main(["--data-root", str(mnist), "--runs-dir", str(tmp_path / "runs"), "--run-name", "check",
                       "--epochs", "2", "--batch-size", "16"])
    run = tmp_path / "runs" / "q3_summaries" / "check"
    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert len(returned["train"]) == 2 and len(returned["test"]) == 4  # validation and test, per epoch
    test_calls = [call for call in returned["test"] if call[1] == 40]  # the official test split, all of it
    assert len(test_calls) == 2
    for tag, calls, position in (("Loss/train", returned["train"], 0), ("Accuracy/train", returned["train"], 1),
                                 ("Loss/test", test_calls, 0), ("Accuracy/test", test_calls, 1)):
        events = accumulator.Scalars(tag)
        assert [event.step for event in events] == [1, 2]
        assert [event.value for event in events] == pytest.approx([call[0][position] for call in calls], rel=1e-6)
    assert {"Loss/val", "Accuracy/val"} <= set(accumulator.Tags()["scalars"])
    assert all(size <= 100 for _, size in returned["train"])  # training images only (100 after validation)


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


def test_build_model_uses_the_module_level_resnet18(monkeypatch):
    built = []

    class Double(q4_resnet.ResNet18):
        def __init__(self, *args, **kwargs):
            built.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(q4_resnet, "ResNet18", Double)
    assert isinstance(q4_resnet.build_model("resnet18", "cifar"), Double) and built[0]["stem"] == "cifar"


def test_resnet18_rejects_unknown_stem():
    with pytest.raises(ValueError, match="stem"):
        q4_resnet.ResNet18(stem="huge")


def test_warmup_linear_schedule_shape():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = q4_resnet.warmup_linear_schedule(optimizer, total_steps=100, warmup_fraction=0.1)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.04) and rates[5] == pytest.approx(0.04 + 0.96 * 0.5)
    assert rates[10] == pytest.approx(1.0) and rates[55] == pytest.approx(0.5) and rates[99] == pytest.approx(1 / 90)


@pytest.mark.parametrize("make_model, lr, steps", [(q2_module_mlp.Net, 0.5, 12),
                                                   (lambda: q4_resnet.ResNet18(stem="imagenet"), 0.05, 8)],
                         ids=["Net", "ResNet18"])
def test_a_few_steps_reduce_the_loss(make_model, lr, steps):
    torch.manual_seed(0)
    data = load_embedded_mnist()
    index = torch.randperm(len(data.train_labels), generator=torch.Generator().manual_seed(0))[:64]
    images, labels = data.train_images[index], data.train_labels[index]
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = [q2_module_mlp.train(model, torch.device("cpu"), [(images, labels)], optimizer)[0] for _ in range(steps)]
    assert losses[-1] < 0.7 * losses[0]


def test_q4_runs_as_a_script_trains_and_resumes(tmp_path):
    mnist = write_tiny_mnist(tmp_path / "mnist", n_train=60, n_test=30)
    common = ["--data-root", str(mnist), "--runs-dir", str(tmp_path / "runs"), "--checkpoint-dir",
              str(tmp_path / "ckpt"), "--run-name", "r", "--batch-size", "16"]
    result = subprocess.run([sys.executable, "exercise1/q4_resnet.py", *common, "--epochs", "1"], cwd=REPO,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "Test accuracy" in result.stdout and "30 test images" in result.stdout
    checkpoint = tmp_path / "ckpt" / "q4_resnet" / "r.pt"
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    final = q4_resnet.main(common + ["--epochs", "2", "--resume"])
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2
    metrics = json.loads((tmp_path / "runs" / "q4_resnet" / "r" / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    assert metrics["final"]["Accuracy/test"] == final["Accuracy/test"] and 0 <= final["Accuracy/test"] <= 1


def test_a_crash_after_an_epoch_loses_no_training_and_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    mnist = write_tiny_mnist(tmp_path / "mnist", n_train=48, n_test=10)

    def run(name: str, *flags: str) -> dict:
        return q4_resnet.main(["--data-root", str(mnist), "--runs-dir", str(tmp_path / "runs"), "--checkpoint-dir",
                               str(tmp_path / "ckpt"), "--run-name", name, "--batch-size", "16", "--seed", "3",
                               "--epochs", "2", *flags])

    def checkpoint(name: str) -> dict:
        return torch.load(tmp_path / "ckpt" / "q4_resnet" / f"{name}.pt", weights_only=True)

    run("straight")

    def evaluation_fails(*args):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(q4_resnet, "test", evaluation_fails)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        run("interrupted")
    assert checkpoint("interrupted")["epoch"] == 1  # saved before the evaluation that failed
    history = json.loads((tmp_path / "runs" / "q4_resnet" / "interrupted" / "metrics.json").read_text())["history"]
    assert history == []  # metrics.json is written after the checkpoint, never ahead of it
    monkeypatch.setattr(q4_resnet, "test", q2_module_mlp.test)
    run("interrupted", "--resume")
    resumed, straight = checkpoint("interrupted"), checkpoint("straight")
    assert resumed["epoch"] == 2
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)


def test_q4_trains_the_sibling_architectures(tmp_path):
    mnist = write_tiny_mnist(tmp_path / "mnist", n_train=60, n_test=10)
    metrics = q4_resnet.main(["--arch", "densenet", "--dry-run", "--data-root", str(mnist), "--runs-dir",
                              str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt"), "--run-name", "dense",
                              "--batch-size", "16"])
    assert 0.0 <= metrics["Accuracy/test"] <= 1.0
    state = torch.load(tmp_path / "ckpt" / "q4_resnet" / "dense.pt", weights_only=True)
    assert state["config"]["arch"] == "densenet"


def test_q4_handles_a_last_batch_of_one_image(tmp_path):
    # 310 digits: 259 train after validation = 2 x 129 + 1; a last batch of one would crash batch norm.
    mnist = write_tiny_mnist(tmp_path / "mnist", n_train=310, n_test=10)
    metrics = q4_resnet.main(["--data-root", str(mnist), "--batch-size", "129", "--epochs", "1", "--runs-dir",
                              str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt"), "--shift", "0"])
    assert math.isfinite(metrics["Loss/train"])


@pytest.mark.parametrize("script", [q1_numpy_mlp, q2_module_mlp, q3_summaries], ids=["q1", "q2", "q3"])
def test_scripts_dry_run_on_the_embedded_sample(script, tmp_path):
    script.main(["--dry-run", "--runs-dir", str(tmp_path), "--run-name", "d"])
    metrics = json.loads((tmp_path / script.__name__.split(".")[-1] / "d" / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and 0.0 <= metrics["final"]["Accuracy/test"] <= 1.0
    assert metrics["data"].startswith("embedded MNIST sample")
