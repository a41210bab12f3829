"""network.py (ReIDNet) and loss.py (ReIDLoss): shapes, output order, weights, loss parts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

import network
from loss import ReIDLoss
from network import ReIDNet


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions gain nothing from threads, and threads on a shared 2-core machine cost a lot."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_input(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 32, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- the network
def test_outputs_shapes_and_order() -> None:
    torch.manual_seed(0)
    model = ReIDNet(num_classes=7, backbone="resnet18", feat_dim=16).eval()
    x = tiny_input()
    with torch.no_grad():
        both, logits, features = model(x)
        # Independent reference: torchvision's resnet18 with the same weights, cut before its classifier.
        reference = torchvision.models.resnet18(weights=None)
        reference.load_state_dict(model.backbone.state_dict(), strict=False)
        reference.fc = torch.nn.Identity()
        pooled = reference.eval()(x)
    assert both.shape == (3, 7 + 16) and logits.shape == (3, 7) and features.shape == (3, 16)
    assert torch.equal(both[:, :7], logits) and torch.equal(both[:, 7:], features)
    linear, batch_norm = model.FC1
    expected_features = F.batch_norm(
        F.linear(pooled, linear.weight, linear.bias),
        batch_norm.running_mean,
        batch_norm.running_var,
        batch_norm.weight,
        batch_norm.bias,
        eps=batch_norm.eps,
    )
    torch.testing.assert_close(features, expected_features, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, F.linear(features, model.FC2.weight, model.FC2.bias))
    assert linear.in_features == 512 and model.FC2.out_features == 7


@pytest.mark.parametrize("backbone, width", [("resnet34", 512), ("resnet50", 2048)])
def test_backbone_widths(backbone: str, width: int) -> None:
    model = ReIDNet(num_classes=3, backbone=backbone, feat_dim=8)
    assert model.FC1[0].in_features == width
    model.train()
    _, logits, features = model(tiny_input(2))
    assert logits.shape == (2, 3) and features.shape == (2, 8)


def test_every_parameter_takes_part_in_the_forward_pass() -> None:
    model = ReIDNet(num_classes=5, backbone="resnet18", feat_dim=12)
    both, logits, features = model(tiny_input(4))
    (both.sum() + logits.sum() + features.sum()).backward()
    unused = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert not unused, f"parameters outside the forward pass: {unused}"
    assert [name for name, _ in model.named_children()] == ["backbone", "FC1", "FC2"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="backbone"):
        ReIDNet(3, backbone="resnet19")
    with pytest.raises(ValueError, match="num_classes"):
        ReIDNet(0, backbone="resnet18")
    with pytest.raises(ValueError, match="feat_dim"):
        ReIDNet(3, backbone="resnet18", feat_dim=0)


# --------------------------------------------------------------------------- ImageNet weights
@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, and every download function turned into a failure."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_download)
    return tmp_path


def test_pretrained_without_cache_says_so_and_downloads_nothing(offline_hub: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        ReIDNet(3, backbone="resnet18", pretrained=True)
    message = str(error.value)
    assert "\n" not in message and "--weights" in message
    assert str(offline_hub / "checkpoints" / "resnet18-f37072fd.pth") in message


def test_pretrained_uses_the_cached_file(offline_hub: Path) -> None:
    torch.manual_seed(2)
    imagenet = torchvision.models.resnet18(weights=None)  # stands in for torchvision's file
    (offline_hub / "checkpoints").mkdir()
    torch.save(imagenet.state_dict(), offline_hub / "checkpoints" / "resnet18-f37072fd.pth")
    model = ReIDNet(3, backbone="resnet18", pretrained=True)
    assert torch.equal(model.backbone.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, imagenet.layer4[1].bn2.running_var)


def test_weights_from_a_path(tmp_path: Path, offline_hub: Path) -> None:
    imagenet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet.state_dict(), path)
    model = ReIDNet(3, backbone="resnet18", weights=path)
    assert torch.equal(model.backbone.layer1[0].conv1.weight, imagenet.layer1[0].conv1.weight)
    wrong = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="resnet34.pth: not a state dict of this ResNet") as error:
        ReIDNet(3, backbone="resnet18", weights=wrong)
    assert "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError):
        ReIDNet(3, backbone="resnet18", weights=tmp_path / "missing.pth")


def test_cache_paths_follow_torchvision_urls() -> None:
    paths = network.cached_imagenet_weight_paths("resnet50")
    assert [p.name for p in paths] == ["resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"]  # V2 default first
    assert paths[0].parent == Path(torch.hub.get_dir()) / "checkpoints"


# --------------------------------------------------------------------------- the combined loss
def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> float:
    total = 0.0
    for row, label in zip(logits.tolist(), labels.tolist()):
        log_norm = math.log(sum(math.exp(v) for v in row))
        log_probs = [v - log_norm for v in row]
        total += -(1 - smoothing) * log_probs[label] - smoothing * sum(log_probs) / len(row)
    return total / len(labels)


def batch_hard(features: torch.Tensor, labels: torch.Tensor, margin: float) -> float:
    terms = []
    for a in range(len(labels)):
        same = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        other = [n for n in range(len(labels)) if labels[n] != labels[a]]
        d_ap = max(torch.dist(features[a], features[p]).item() for p in same)
        d_an = min(torch.dist(features[a], features[n]).item() for n in other)
        terms.append(max(0.0, margin + d_ap - d_an))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("triplet_weight, id_weight", [(1.0, 1.0), (0.5, 2.0), (0.0, 1.0), (1.0, 0.0)])
def test_loss_parts_and_weighted_total(triplet_weight: float, id_weight: float) -> None:
    generator = torch.Generator().manual_seed(3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    logits = torch.randn(8, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    features = torch.randn(8, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    criterion = ReIDLoss(5, margin=0.5, triplet_weight=triplet_weight, id_weight=id_weight, label_smoothing=0.1)
    total, parts = criterion(logits, features, labels)
    assert set(parts) == {"triplet", "id", "total"}
    assert all(not part.requires_grad and part.dim() == 0 for part in parts.values())
    assert parts["id"].item() == pytest.approx(smoothed_cross_entropy(logits, labels, 0.1), rel=1e-6)
    assert parts["triplet"].item() == pytest.approx(batch_hard(features, labels, 0.5), rel=1e-6)
    assert total.item() == pytest.approx(triplet_weight * parts["triplet"].item() + id_weight * parts["id"].item())
    assert parts["total"].item() == total.item()
    total.backward()
    assert (logits.grad.abs().sum() > 0) == (id_weight > 0)
    assert (features.grad.abs().sum() > 0) == (triplet_weight > 0)


def test_loss_trains_the_network_end_to_end() -> None:
    torch.manual_seed(4)
    model = ReIDNet(num_classes=4, backbone="resnet18", feat_dim=8)
    criterion = ReIDLoss(4)
    _, logits, features = model(tiny_input(8))
    total, _ = criterion(logits, features, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    total.backward()
    assert model.backbone.conv1.weight.grad is not None and torch.isfinite(model.backbone.conv1.weight.grad).all()
    assert model.FC2.weight.grad.abs().sum() > 0


def test_loss_bad_arguments() -> None:
    with pytest.raises(ValueError, match="logits"):
        ReIDLoss(5)(torch.randn(4, 3), torch.randn(4, 2), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="features, labels"):
        ReIDLoss(3)(torch.randn(4, 3), torch.randn(3, 2), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="weights"):
        ReIDLoss(3, triplet_weight=0.0, id_weight=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        ReIDLoss(3, label_smoothing=1.0)
    with pytest.raises(ValueError, match="mining"):
        ReIDLoss(3, mining="easy")
