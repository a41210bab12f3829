"""The sibling labs (DenseNet/ResNeXt and FaceNet: tests/test_lab_densenet_facenet.py): network C, the
pair/triplet losses and selectors, kNN recall@k, the Fashion-MNIST readers, the training loop's validation,
metrics and resume, and every script end to end on tiny data. References are brute-force loops, scikit-learn and hand-computed numbers, never the code under test."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from exercise2 import ce_vs_contrastive, embeddings_2d, siamese_verification
from exercise2.ce_vs_contrastive import LabCNN
from exercise2.siamese_verification import NetworkC, SiameseVerifier, parse_lfw_pairs, parse_pair_list
from report.sections import PLACEHOLDER, strip_comments
from utils.embedding import (
    AccumulatedAccuracy, AverageNonzeroTriplets, best_threshold, centroid_predict, fit_embedding, identity_batches,
    knn_predict, random_pairs, random_triplets, recall_at_k,
)
from utils.fashion_mnist import FASHION_CLASSES, load_fashion_csv, load_fashion_mnist, read_fashion_csv
from utils.RandomSampler import RandomIdentitySampler
from utils.siamese_losses import (
    AllPositivePairSelector, AllTripletSelector, ContrastiveLoss, HardestNegativeTripletSelector,
    HardNegativePairSelector, OnlineContrastiveLoss, OnlineTripletLoss, RandomHardNegativeTripletSelector,
    SemihardNegativeTripletSelector, contrastive_loss,
)
from utils.synthetic_market import generate_market


# --------------------------------------------------------------------------- network C and the losses
def test_network_c_has_the_stated_layers_and_131072_fc_inputs():
    with torch.device("meta"):  # the 131,072 x 1024 FC without allocating or initialising its 0.5 GB
        net = NetworkC()
    with torch.no_grad():
        # Only the FC depends on the input size: the convolutions of a small C run on a 128 x 128 image.
        assert NetworkC(image_size=16).features[:-1].eval()(torch.randn(1, 3, 128, 128)).shape == (1, 512, 16, 16)
        assert NetworkC(image_size=16).eval()(torch.randn(3, 3, 16, 16)).shape == (3, 1024)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (3, 64, (5, 5), (2, 2)), (64, 128, (5, 5), (2, 2)), (128, 256, (3, 3), (1, 1)), (256, 512, (3, 3), (1, 1))]
    kinds = [type(m).__name__ for m in net.features][:-1] + [type(m).__name__ for m in net.fc]
    assert kinds == ["Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d"] * 3 + ["Conv2d", "ReLU", "BatchNorm2d"] + [
        "Linear", "ReLU", "BatchNorm1d"]
    assert net.fc[0].in_features == 131_072 == 16 * 16 * 512 and net.fc[0].out_features == 1024
    with torch.device("meta"):
        verifier = SiameseVerifier("bce")
    assert verifier.head.in_features == 2048 and verifier.head.out_features == 1


def test_bce_loss_equals_hand_computed_value():
    model = SiameseVerifier("bce", image_size=8)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.weight[0, 0], model.head.weight[0, 1024], model.head.bias[0] = 1.0, -2.0, 0.5
    first, second = torch.zeros(2, 1024), torch.zeros(2, 1024)
    first[:, 0] = torch.tensor([1.0, -1.0])
    second[:, 0] = torch.tensor([0.25, 1.0])
    same = torch.tensor([1.0, 0.0])
    logits = [1.0 - 0.5 + 0.5, -1.0 - 2.0 + 0.5]  # 1.0 and -2.5
    sigmoid = [1 / (1 + math.exp(-z)) for z in logits]
    expected = -(math.log(sigmoid[0]) + math.log(1 - sigmoid[1])) / 2
    assert model.pair_loss(first, second, same, margin=1.0).item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_losses_equal_hand_computed_values():
    # y D^2 + (1 - y) max(0, m - D)^2: 0.25, 0 (beyond the margin), 0.49; mean 0.74 / 3.
    value = contrastive_loss(torch.tensor([0.5, 2.0, 0.3]), torch.tensor([1.0, 0.0, 0.0]), margin=1.0)
    assert value.item() == pytest.approx(0.74 / 3)
    first, second = torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([[3.0, 4.0], [3.0, 4.0]])
    assert ContrastiveLoss(margin=6.0)(first, second, torch.tensor([1.0, 0.0])).item() == pytest.approx((25 + 1) / 2)
    with pytest.raises(ValueError, match="margin"):
        ContrastiveLoss(margin=0.0)


def test_lab_cnn_is_the_labs_network():
    model = LabCNN()
    convs = [(m.in_channels, m.out_channels, m.kernel_size, m.padding) for m in model.features
             if isinstance(m, nn.Conv2d)]
    assert convs == [(1, 8, (3, 3), (1, 1)), (8, 8, (3, 3), (1, 1)), (8, 16, (3, 3), (1, 1)),
                     (16, 16, (3, 3), (1, 1)), (16, 1, (3, 3), (1, 1))]
    assert [type(m).__name__ for m in model.features] == (
        ["Conv2d", "ReLU", "BatchNorm2d"] * 2 + ["MaxPool2d"] + ["Conv2d", "ReLU", "BatchNorm2d"] * 2
        + ["MaxPool2d", "Conv2d", "ReLU", "Flatten"])
    assert (model.linear1.in_features, model.linear1.out_features, model.linear2.out_features) == (49, 49, 10)
    # No activation between the two linear layers: together they are one affine map of the 49 features.
    images = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        features = model.eval().features(images)
        weight, bias = model.linear2.weight @ model.linear1.weight, model.linear2.weight @ model.linear1.bias
        torch.testing.assert_close(model(images), features @ weight.t() + bias + model.linear2.bias)


# --------------------------------------------------------------------------- selectors against brute force
LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3])


def _batch(seed: int) -> tuple[torch.Tensor, np.ndarray]:
    embeddings = torch.randn(len(LABELS), 2, generator=torch.Generator().manual_seed(seed))
    distances = np.linalg.norm(embeddings.numpy()[:, None] - embeddings.numpy()[None], axis=2)
    return embeddings, distances


def _pairs(same: bool) -> list[tuple[int, int]]:
    return [(i, j) for i, j in itertools.combinations(range(len(LABELS)), 2) if (LABELS[i] == LABELS[j]) == same]


def _as_set(rows: torch.Tensor) -> set[tuple[int, ...]]:
    return set(map(tuple, rows.tolist()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_selectors_against_brute_force(seed):
    embeddings, distances = _batch(seed)
    positives, negatives = _pairs(True), _pairs(False)

    positive_pairs, negative_pairs = HardNegativePairSelector().get_pairs(embeddings, LABELS)
    assert sorted(_as_set(positive_pairs)) == positives
    closest = sorted(negatives, key=lambda pair: distances[pair])[: len(positives)]
    assert _as_set(negative_pairs) == set(closest)

    # all_positive balances: as many negatives as positives, drawn at random among all negatives.
    draws = [AllPositivePairSelector(generator=torch.Generator().manual_seed(draw)).get_pairs(embeddings, LABELS)
             for draw in range(4)]
    for positive_pairs, negative_pairs in draws:
        assert sorted(_as_set(positive_pairs)) == positives
        assert len(_as_set(negative_pairs)) == len(negative_pairs) == len(positives)
        assert _as_set(negative_pairs) <= set(negatives)
    assert len({frozenset(_as_set(negative_pairs)) for _, negative_pairs in draws}) > 1
    _, every_negative = AllPositivePairSelector(balance=False).get_pairs(embeddings, LABELS)
    assert sorted(_as_set(every_negative)) == negatives


def _pair_candidates(distances: np.ndarray, margin: float) -> dict[tuple[int, int], dict[str, list[int]]]:
    """Brute force, per ordered positive pair (a, p): its negatives' triplet losses, the hard and semi-hard ones."""
    result = {}
    for a, p in itertools.permutations(range(len(LABELS)), 2):
        if LABELS[a] != LABELS[p]:
            continue
        losses = {n: distances[a, p] - distances[a, n] + margin for n in range(len(LABELS)) if LABELS[n] != LABELS[a]}
        result[(a, p)] = {"losses": losses, "hard": [n for n, v in losses.items() if v > 0],
                          "semi": [n for n, v in losses.items() if 0 < v < margin]}
    return result


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_selectors_against_brute_force(seed):
    embeddings, distances = _batch(seed)
    margin = 0.6
    candidates = _pair_candidates(distances, margin)

    every = {(a, p, n) for (a, p), c in candidates.items() for n in c["losses"]}
    assert _as_set(AllTripletSelector().get_triplets(embeddings, LABELS)) == every

    hardest = {(a, p, max(c["losses"], key=c["losses"].get)) for (a, p), c in candidates.items() if c["hard"]}
    assert _as_set(HardestNegativeTripletSelector(margin).get_triplets(embeddings, LABELS)) == hardest

    for selector, kind in ((RandomHardNegativeTripletSelector, "hard"), (SemihardNegativeTripletSelector, "semi")):
        seen = set()
        for draw in range(6):
            chosen = selector(margin, torch.Generator().manual_seed(draw)).get_triplets(embeddings, LABELS)
            triplets = list(map(tuple, chosen.tolist()))
            assert len(triplets) == len(set(triplets))  # one triplet per (anchor, positive) pair
            assert {(a, p) for a, p, _ in triplets} == {pair for pair, c in candidates.items() if c[kind]}
            assert all(n in candidates[(a, p)][kind] for a, p, n in triplets)
            seen |= set(triplets)
        if kind == "hard":
            assert len(seen) > len(hardest)  # random, not always the hardest one


def test_the_two_upstream_bugs_stay_fixed():
    embeddings, _ = _batch(0)
    # 1. Both orders of every positive pair serve as (anchor, positive): upstream only takes i < j.
    triplets = _as_set(AllTripletSelector().get_triplets(embeddings, LABELS))
    for i, j in _pairs(True):
        assert any(t[:2] == (i, j) for t in triplets) and any(t[:2] == (j, i) for t in triplets)
    # 2. A batch without any positive pair gives a zero loss (still in the graph), not a crash or a made-up triplet.
    lonely = torch.randn(5, 2, requires_grad=True)
    labels = torch.arange(5)
    for selector in (AllTripletSelector(), HardestNegativeTripletSelector(1.0), RandomHardNegativeTripletSelector(1.0),
                     SemihardNegativeTripletSelector(1.0)):
        assert len(selector.get_triplets(lonely, labels)) == 0
        loss, nonzero = OnlineTripletLoss(1.0, selector)(lonely, labels)
        assert loss.item() == 0.0 and nonzero == 0 and loss.requires_grad
    for selector in (AllPositivePairSelector(), HardNegativePairSelector()):
        loss = OnlineContrastiveLoss(1.0, selector)(lonely, labels)
        assert loss.item() == 0.0 and loss.requires_grad
    # ... and a batch of one class (no negative) too.
    one_class = torch.zeros(5, dtype=torch.long)
    loss, nonzero = OnlineTripletLoss(1.0, HardestNegativeTripletSelector(1.0))(lonely, one_class)
    assert loss.item() == 0.0 and nonzero == 0


def test_online_losses_against_brute_force():
    embeddings, distances = _batch(3)
    margin = 1.5
    positives = [distances[pair] for pair in _pairs(True)]
    negatives = sorted(distances[pair] for pair in _pairs(False))[: len(positives)]
    terms = [d * d for d in positives] + [max(0.0, margin - d) ** 2 for d in negatives]
    expected = sum(terms) / (2 * len(positives))
    loss = OnlineContrastiveLoss(margin, HardNegativePairSelector())(embeddings, LABELS)
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    hinges = [max(0.0, distances[a, p] - distances[a, n] + margin) for a, p, n in itertools.product(range(12), repeat=3)
              if a != p and LABELS[a] == LABELS[p] and LABELS[n] != LABELS[a]]
    loss, nonzero = OnlineTripletLoss(margin, AllTripletSelector())(embeddings, LABELS)
    assert loss.item() == pytest.approx(np.mean(hinges), rel=1e-5)
    assert nonzero == sum(value > 0 for value in hinges)


def test_random_pairs_and_triplets_are_valid():
    labels = np.array([3, 3, 5, 5, 5, 7, 9, 9])
    rng = np.random.default_rng(0)
    first, second, same = random_pairs(labels, 200, rng)
    assert same.sum().item() == 100 and (first != second).all()
    assert ((labels[first.numpy()] == labels[second.numpy()]) == same.numpy().astype(bool)).all()
    anchors, positives, negatives = random_triplets(labels, rng)
    assert sorted(anchors.tolist()) == [0, 1, 2, 3, 4, 6, 7]  # item 5 is alone in its class
    assert (labels[anchors] == labels[positives]).all() and (anchors != positives).all()
    assert (labels[anchors] != labels[negatives]).all()


def test_identity_batches_chain_sampler_epochs_into_p_by_k_batches():
    labels = [digit for digit in range(10) for _ in range(20)]
    batches = list(identity_batches(RandomIdentitySampler(labels, 32, 8, seed=0), 7))
    assert len(batches) == 7
    for batch in batches:
        counts = np.bincount(np.asarray(labels)[batch.numpy()])
        assert sorted(counts[counts > 0].tolist()) == [8, 8, 8, 8]


# --------------------------------------------------------------------------- kNN and recall@k
def _brute_force_ranking(reference, reference_labels, query, k):
    """Classes by votes of the k nearest (a tie: the nearer first neighbour first); voted classes only."""
    order = sorted(range(len(reference)), key=lambda r: float(np.linalg.norm(reference[r] - query)))[:k]
    votes, first = {}, {}
    for rank, r in enumerate(order):
        label = int(reference_labels[r])
        votes[label] = votes.get(label, 0) + 1
        first.setdefault(label, rank)
    return sorted(votes, key=lambda label: (-votes[label], first[label]))


def test_recall_at_k_is_the_knn_top_k_class_recall():
    generator = torch.Generator().manual_seed(0)
    reference, queries = torch.randn(60, 3, generator=generator), torch.randn(40, 3, generator=generator)
    reference_labels = torch.randint(0, 6, (60,), generator=generator)
    query_labels = torch.randint(0, 7, (40,), generator=generator)  # class 6: never in the reference
    for neighbours in (1, 3, 7):
        rankings = [_brute_force_ranking(reference.numpy(), reference_labels.numpy(), q, neighbours)
                    for q in queries.numpy()]
        expected = {k: np.mean([int(label) in ranking[:k] for label, ranking in zip(query_labels, rankings)])
                    for k in (1, 2, 3, 5)}
        recalls = recall_at_k(reference, reference_labels, queries, query_labels, (1, 2, 3, 5), neighbours)
        assert recalls == pytest.approx(expected)
        predicted = knn_predict(reference, reference_labels, queries, neighbours)
        assert predicted.tolist() == [ranking[0] for ranking in rankings]
        assert recalls[1] == pytest.approx((predicted == query_labels).float().mean().item())


def test_recall_at_k_agrees_with_scikit_learn_knn_probabilities():
    from sklearn.metrics import top_k_accuracy_score
    from sklearn.neighbors import KNeighborsClassifier

    # Five neighbours, classes drawn so that the kNN probabilities of each query have no tie among voted classes.
    generator = torch.Generator().manual_seed(1)
    reference = torch.randn(200, 2, generator=generator)
    reference_labels = (reference[:, 0] > 0).long() * 2 + (reference[:, 1] > 0).long()
    queries = torch.randn(100, 2, generator=generator)
    query_labels = (queries[:, 0] > 0).long() * 2 + (queries[:, 1] > 0).long()
    probabilities = KNeighborsClassifier(5).fit(reference.numpy(), reference_labels.numpy()).predict_proba(
        queries.numpy())
    voted = [sorted(p[p > 0]) for p in probabilities]
    keep = torch.tensor([len(set(v)) == len(v) for v in voted])
    expected = {k: top_k_accuracy_score(query_labels[keep].numpy(), probabilities[keep.numpy()], k=k, labels=range(4))
                for k in (1, 2)}
    assert recall_at_k(reference, reference_labels, queries[keep], query_labels[keep], (1, 2), 5) == pytest.approx(
        expected)


def test_knn_centroid_and_threshold_on_hand_made_cases():
    reference = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [6.0, 0.0], [7.0, 0.0]])
    reference_labels = torch.tensor([4, 4, 9, 9, 9])
    queries = torch.tensor([[0.2, 0.0], [4.0, 0.0], [2.9, 0.0]])
    assert knn_predict(reference, reference_labels, queries, k=1).tolist() == [4, 9, 4]
    assert knn_predict(reference, reference_labels, queries, k=5).tolist() == [9, 9, 9]
    # k = 2 at 2.9: one 4 (at 1) and one 9 (at 5): a tie, won by the nearer first neighbour (1, class 4).
    assert knn_predict(reference, reference_labels, queries, k=2).tolist() == [4, 9, 4]
    # centroids 0.5 and 6.0: 2.9 is nearer to 0.5
    assert centroid_predict(reference, reference_labels, queries).tolist() == [4, 9, 4]
    threshold, accuracy = best_threshold(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    assert accuracy == 0.75 and 0.1 < threshold <= 0.35


# --------------------------------------------------------------------------- the training loop
def test_running_metrics_on_hand_made_batches():
    accuracy = AccumulatedAccuracy()
    accuracy.update(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))  # 1 of 2
    accuracy.update(torch.tensor([[0.0, 1.0]]), torch.tensor([1]))  # 1 of 1
    assert accuracy.value() == pytest.approx(2 / 3)
    nonzero = AverageNonzeroTriplets()
    for count in (4, 0, 5):
        nonzero.update(count)
    assert nonzero.value() == 3.0
    nonzero.reset()
    assert nonzero.value() == 0.0


def _tiny_fit(epochs: int, checkpoint, resume: bool = False, logger=None):
    """A linear embedding trained with an online triplet loss whose selector draws at random."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    data = torch.randn(48, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(48) % 4
    criterion = OnlineTripletLoss(1.0, RandomHardNegativeTripletSelector(1.0))
    nonzero = AverageNonzeroTriplets()

    def batch_loss(batch):
        loss, count = criterion(model(data[batch]), labels[batch])
        nonzero.update(count)
        return loss

    def batches(epoch):
        return torch.randperm(48, generator=torch.Generator().manual_seed(epoch)).view(4, 12)

    final = fit_embedding(model, optimizer, batches, batch_loss, epochs=epochs, logger=logger, verbose=False,
                          validation_batches=[torch.arange(12), torch.arange(12, 24)], metrics=[nonzero],
                          checkpoint_path=checkpoint, resume=resume, seed=3)
    return model, final


def test_fit_embedding_validates_logs_metrics_and_resumes_exactly(tmp_path):
    from utils.training import RunLogger

    logger = RunLogger(tmp_path / "runs", "lab", "straight", {}, tensorboard=False)
    straight, final = _tiny_fit(3, tmp_path / "straight.pt", logger=logger)
    history = json.loads((tmp_path / "runs" / "lab" / "straight" / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert {"Loss/train", "Loss/val", "NonzeroTriplets/train", "NonzeroTriplets/val"} <= set(history[-1])
    assert final["Loss/val"] == history[-1]["Loss/val"]

    _tiny_fit(1, tmp_path / "resumed.pt")  # interrupted after one epoch ...
    resumed, resumed_final = _tiny_fit(3, tmp_path / "resumed.pt", resume=True)  # ... and resumed
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)
    assert resumed_final == pytest.approx({k: v for k, v in final.items() if not k.startswith("Time")} | {
        "Time/train_epoch_s": resumed_final["Time/train_epoch_s"]})
    state = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert state["epoch"] == 3 and set(state["model"]) == {"weight", "bias"}

    torch.save({"epoch": 1, "model": {"other": torch.zeros(1)}, "optimizer": {}, "metrics": {}}, tmp_path / "bad.pt")
    with pytest.raises(SystemExit, match=r"^error: --resume: .*bad\.pt: a checkpoint of another model"):
        _tiny_fit(2, tmp_path / "bad.pt", resume=True)


def test_fit_embedding_stops_on_a_non_finite_loss_in_one_line():
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def batch_loss(batch):
        return model(batch).sum() * float("nan")

    with pytest.raises(SystemExit, match=r"^error: lab: the training loss became nan at epoch 1, batch 1 \(diverged"):
        fit_embedding(model, optimizer, lambda epoch: [torch.ones(3, 2)], batch_loss, epochs=2, description="lab",
                      verbose=False)


# --------------------------------------------------------------------------- Fashion-MNIST readers
def _write_fashion_csv(path, labels, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (len(labels), 784))
    header = "label," + ",".join(f"pixel{i}" for i in range(1, 785))
    rows = [",".join(map(str, [label, *row])) for label, row in zip(labels, pixels)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return pixels


def _write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.tobytes())


def test_fashion_csv_reader_and_its_errors(tmp_path):
    pixels = _write_fashion_csv(tmp_path / "fashion-mnist_train.csv", [9, 0, 3])
    _write_fashion_csv(tmp_path / "fashion-mnist_test.csv", [1, 2], seed=1)
    images, labels = read_fashion_csv(tmp_path / "fashion-mnist_train.csv")
    assert images.shape == (3, 1, 28, 28) and labels.tolist() == [9, 0, 3]
    assert images[1, 0, 0, 5].item() == pytest.approx(pixels[1, 5] / 255)
    data = load_fashion_csv(tmp_path / "fashion-mnist_train.csv")
    assert data.source.startswith("Fashion-MNIST CSV") and data.test_labels.tolist() == [1, 2]
    assert FASHION_CLASSES[9] == "Ankle boot" and len(FASHION_CLASSES) == 10

    bad = tmp_path / "bad_train.csv"
    bad.write_text("label,pixel1\n3,4\n")
    with pytest.raises(ValueError, match=r"bad_train\.csv: expected a header then rows of label \+ 784 pixels"):
        read_fashion_csv(bad)
    _write_fashion_csv(bad, [12])
    with pytest.raises(ValueError, match=r"bad_train\.csv: labels must be integers 0\.\.9"):
        read_fashion_csv(bad)
    with pytest.raises(FileNotFoundError, match=r"nothing\.csv: Fashion-MNIST CSV not found"):
        read_fashion_csv(tmp_path / "nothing.csv")


def test_fashion_mnist_raw_folder_is_read_and_never_confused_with_mnist(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("FashionMNIST", "MNIST"):
        raw = tmp_path / folder / "raw"
        raw.mkdir(parents=True)
        _write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (6, 28, 28)))
        _write_idx(raw / "train-labels-idx1-ubyte", [0, 1, 2, 3, 4, 9])
        _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (2, 28, 28)))
        _write_idx(raw / "t10k-labels-idx1-ubyte", [5, 6])
    data = load_fashion_mnist(tmp_path)
    assert data.source == f"Fashion-MNIST from {tmp_path / 'FashionMNIST' / 'raw'}"
    assert data.train_images.shape == (6, 1, 28, 28) and data.train_labels.tolist() == [0, 1, 2, 3, 4, 9]
    with pytest.raises(FileNotFoundError, match="no Fashion-MNIST found"):
        load_fashion_mnist(tmp_path / "MNIST")  # an MNIST folder is not Fashion-MNIST


# --------------------------------------------------------------------------- LFW pair files
def test_lfw_pairs_both_line_formats_and_headers(tmp_path):
    dev = tmp_path / "pairsDevTrain.txt"
    dev.write_text("2\nAaron_Peirsol\t1\t2\nAbel_Pacheco 3 Zico 1\n")
    assert parse_lfw_pairs(dev, tmp_path / "lfw") == [
        (str(tmp_path / "lfw/Aaron_Peirsol/Aaron_Peirsol_0001.jpg"),
         str(tmp_path / "lfw/Aaron_Peirsol/Aaron_Peirsol_0002.jpg"), 1),
        (str(tmp_path / "lfw/Abel_Pacheco/Abel_Pacheco_0003.jpg"), str(tmp_path / "lfw/Zico/Zico_0001.jpg"), 0)]
    folds = tmp_path / "pairs.txt"
    folds.write_text("10\t300\nAaron_Peirsol 1 4\n")
    assert parse_lfw_pairs(folds, tmp_path)[0][2] == 1
    bad = tmp_path / "bad.txt"
    bad.write_text("2\nAaron_Peirsol 1 2\nAbel_Pacheco x\n")
    with pytest.raises(ValueError, match=r"bad\.txt:3: expected"):
        parse_lfw_pairs(bad, tmp_path)


def test_plain_pair_list_and_its_errors(tmp_path):
    listing = tmp_path / "pairs.txt"
    listing.write_text("# comment\na.jpg sub/b.jpg 1\n/abs/c.jpg d.jpg 0\n")
    assert parse_pair_list(listing) == [(str(tmp_path / "a.jpg"), str(tmp_path / "sub/b.jpg"), 1),
                                        ("/abs/c.jpg", str(tmp_path / "d.jpg"), 0)]
    listing.write_text("a.jpg b.jpg 1\na.jpg b.jpg 2\n")
    with pytest.raises(ValueError, match=r"pairs\.txt:2: expected 'path1 path2 label'"):
        parse_pair_list(listing)
    with pytest.raises(SystemExit, match=r"error: .*pairs\.txt:2"):
        siamese_verification.main(["--dry-run", "--pairs-train", str(listing), "--pairs-test", str(listing),
                                   "--runs-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck")])


# --------------------------------------------------------------------------- every script, end to end
def test_siamese_verification_trains_both_heads_into_one_table(tmp_path):
    market = tmp_path / "market"
    generate_market(market, ids=4, images_per_id=4)
    heads = siamese_verification.main([
        "--dry-run", "--image-size", "16", "--market-root", str(market), "--train-pairs", "8", "--test-pairs", "8",
        "--batch-size", "4", "--runs-dir", str(tmp_path / "runs"), "--run-name", "r",
        "--checkpoint-dir", str(tmp_path / "ck")])
    run = tmp_path / "runs" / "siamese_verification" / "r"
    saved = json.loads((run / "results.json").read_text())
    assert set(saved["heads"]) == {"bce", "contrastive"} == set(heads)
    for head in heads.values():
        assert {"accuracy_train", "accuracy_test", "roc_auc_train", "roc_auc_test"} <= set(head)
        assert all(0 <= head[key] <= 1 for key in ("accuracy_train", "accuracy_test", "roc_auc_test"))
    table = (run / "results_table.md").read_text()
    assert "| bce | " in table and "| contrastive | " in table and "train AUC" in table
    assert (run / "roc.png").is_file() and (run / "pairs_train.txt").is_file()
    history = json.loads((run / "bce" / "metrics.json").read_text())["history"]
    assert "Loss/val" in history[-1]
    assert {path.name for path in (tmp_path / "ck" / "siamese_verification" / "r").iterdir()} >= {"bce.pt",
                                                                                                  "contrastive.pt"}


CE_FLAGS = ["--dry-run", "--batch-size", "32", "--num-instances", "4", "--tsne-points", "30", "--val-size", "40"]


def test_ce_vs_contrastive_sweep_writes_table_figures_and_models(tmp_path, capsys):
    flags = [*CE_FLAGS, "--train-fractions", "0.5", "1", "--runs-dir", str(tmp_path / "runs"), "--run-name", "d",
             "--checkpoint-dir", str(tmp_path / "ck")]
    results = ce_vs_contrastive.main(flags)
    run = tmp_path / "runs" / "ce_vs_contrastive" / "d"
    assert set(results) == {"ce", "contrastive", "triplet"}
    for figure in ("tsne.png", "recall_at_k.png", "pairs.png", "loss_curves.png", "sample_efficiency.png"):
        assert (run / figure).is_file()
    saved = json.loads((run / "results.json").read_text())
    assert set(saved["methods"]["ce"]) >= {"accuracy_knn", "accuracy_argmax", "f1_macro", "recall_at_5"}
    assert saved["class_names"] == [str(digit) for digit in range(10)]
    rows = [row.split(",") for row in (run / "sample_efficiency.csv").read_text().splitlines()]
    assert rows[0] == ["share (%)", "training images", "epochs", "ce", "contrastive", "triplet"] and len(rows) == 3
    assert rows[1][0] == "50" and rows[1][3] == saved["report_fields"]["ce_50pct"]
    assert rows[2][3:] == [f"{100 * results[method]['accuracy_knn']:.2f}" for method in ("ce", "contrastive",
                                                                                        "triplet")]
    history = json.loads((run / "100pct" / "triplet" / "metrics.json").read_text())["history"]
    assert "Loss/val" in history[-1]
    checkpoint = torch.load(tmp_path / "ck" / "ce_vs_contrastive" / "d" / "50pct" / "contrastive.pt",
                            weights_only=True)
    model = LabCNN()
    model.load_state_dict(checkpoint["model"])  # the saved model is the lab's network

    # --resume of the finished run trains nothing more and reproduces its numbers from the saved models.
    capsys.readouterr()
    again = ce_vs_contrastive.main([*flags, "--resume"])
    assert "resumed from" in capsys.readouterr().out
    assert again == results


def test_ce_vs_contrastive_reads_the_labs_fashion_csv(tmp_path):
    labels = [label for label in range(10) for _ in range(8)]
    _write_fashion_csv(tmp_path / "fashion-mnist_train.csv", labels)
    _write_fashion_csv(tmp_path / "fashion-mnist_test.csv", labels[::4], seed=1)
    ce_vs_contrastive.main(["--epochs", "1", "--min-steps", "0", "--batch-size", "16", "--num-instances", "4",
                            "--tsne-points", "20", "--val-size", "20", "--methods", "ce", "--train-csv",
                            str(tmp_path / "fashion-mnist_train.csv"), "--runs-dir", str(tmp_path / "runs"),
                            "--run-name", "f", "--checkpoint-dir", str(tmp_path / "ck")])
    saved = json.loads((tmp_path / "runs" / "ce_vs_contrastive" / "f" / "results.json").read_text())
    assert saved["data"].startswith("Fashion-MNIST CSV") and saved["class_names"] == list(FASHION_CLASSES)


@pytest.mark.parametrize("flags, message", [
    (["--train-csv", "{tmp}/missing_train.csv"], r"^error: .*missing_train\.csv: Fashion-MNIST CSV not found$"),
    (["--fashion-root", "{tmp}"], r"^error: .*: no Fashion-MNIST found; expected .*FashionMNIST/raw/"),
    (["--train-fractions", "0"], r"^error: --train-fractions: each must be in \(0, 1\]"),
    (["--seed", "-1"], r"^error: --seed must be >= 0"),
    (["--contrastive-margin", "0"], r"^error: --contrastive-margin and --triplet-margin must be > 0$"),
    (["--batch-size", "30", "--num-instances", "4"], r"^error: --batch-size \(30\) must be a multiple"),
    (["--test-csv", "x.csv"], r"^error: --test-csv goes with --train-csv$"),
    (["--resume"], r"^error: --resume needs --run-name"),
])
def test_ce_vs_contrastive_bad_flags_and_files_are_one_line(tmp_path, flags, message):
    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    with pytest.raises(SystemExit) as error:
        ce_vs_contrastive.main(["--dry-run", "--runs-dir", str(tmp_path / "runs"), "--checkpoint-dir",
                                str(tmp_path / "ck"), *flags])
    assert "\n" not in str(error.value)
    assert not (tmp_path / "runs").exists()  # nothing trained
    assert re.search(message, str(error.value)), str(error.value)


def test_a_read_only_checkpoint_dir_stops_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match=r"^error: --checkpoint-dir .*file/embeddings_2d/r: not writable"):
        embeddings_2d.main(["--dry-run", "--runs-dir", str(tmp_path), "--run-name", "r",
                            "--checkpoint-dir", str(blocker)])


def test_embeddings_2d_every_method_and_selector(tmp_path):
    accuracies = embeddings_2d.main([
        "--dry-run", "--batch-size", "40", "--num-instances", "4", "--pair-selectors", "all_positive",
        "--triplet-selectors", "all", "semi_hard",
        "--runs-dir", str(tmp_path), "--run-name", "d", "--checkpoint-dir", str(tmp_path / "ck")])
    run = tmp_path / "embeddings_2d" / "d"
    names = ["softmax", "siamese", "triplet", "online_contrastive_all_positive", "online_triplet_all",
             "online_triplet_semi_hard"]
    assert list(accuracies) == names
    for name in names:
        assert (run / f"scatter_{name}.png").is_file()
        assert 0 <= accuracies[name] <= 1
    methods = json.loads((run / "results.json").read_text())["methods"]
    assert methods["softmax"]["accuracy_test_1nn"] == accuracies["softmax"]
    assert {"Loss/train", "Accuracy/train", "Loss/val", "Accuracy/val"} <= set(methods["softmax"])
    assert {"NonzeroTriplets/train", "NonzeroTriplets/val"} <= set(methods["online_triplet_all"])
    assert "online_triplet_semi_hard" in (run / "accuracy_table.md").read_text()


def test_each_training_is_independent_of_the_others_in_its_run(tmp_path):
    # The README quotes the default command's numbers from the run with every selector: that is only right if
    # a training gives the same result whatever else the run trains before it.
    flags = ["--dry-run", "--batch-size", "40", "--num-instances", "4", "--checkpoint-dir", str(tmp_path / "ck"),
             "--runs-dir", str(tmp_path)]
    alone = embeddings_2d.main([*flags, "--methods", "online_triplet", "--run-name", "alone"])
    together = embeddings_2d.main([*flags, "--methods", "siamese", "online_triplet", "--triplet-selectors",
                                   "hardest", "random_hard", "--run-name", "together"])
    assert alone["online_triplet_random_hard"] == together["online_triplet_random_hard"]
    weights = [torch.load(tmp_path / "ck" / "embeddings_2d" / run / "online_triplet_random_hard.pt",
                          weights_only=True)["model"] for run in ("alone", "together")]
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=0)


def test_siamese_verification_bad_flags_are_one_line(tmp_path):
    for flags, message in ((["--image-size", "12"], "--image-size must be a multiple of 8, got 12"),
                           (["--margin", "-1"], "--margin must be > 0"),
                           (["--train-pairs", "1"], "--train-pairs and --test-pairs must be >= 2"),
                           (["--lfw-root", str(tmp_path / "none")], "pairsDevTrain.txt: LFW pair file not found")):
        with pytest.raises(SystemExit, match=message):
            siamese_verification.main(["--dry-run", "--runs-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path),
                                       *flags])


# --------------------------------------------------------------------------- written answers
def _placeholders(answer: str) -> set[str]:
    text = strip_comments((Path(__file__).resolve().parents[1] / "report" / "answers" / answer).read_text())
    return set(PLACEHOLDER.findall(text))


def test_every_figure_the_ce_vs_contrastive_answers_quote_is_written_by_the_sweep():
    fractions = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)  # the sweep the answers quote
    metrics = {"accuracy_knn": 0.9, "precision_macro": 0.9, "recall_macro": 0.9, "f1_macro": 0.9,
               **{f"recall_at_{k}": 0.9 for k in ce_vs_contrastive.RECALL_KS}}
    table = {f: {m: dict(metrics, **({"accuracy_argmax": 0.9} if m == "ce" else {}))
                 for m in ce_vs_contrastive.METHODS} for f in fractions}
    history = [{"epoch": 1, "Loss/val": 0.5}, {"epoch": 2, "Loss/val": 0.4}]
    fields = ce_vs_contrastive.report_fields(table, {f: 100 for f in fractions}, {f: 2 for f in fractions},
                                             {f: {m: history for m in ce_vs_contrastive.METHODS} for f in fractions},
                                             "data")
    for answer in ("lab_ce_vs_contrastive.md", "lab_ce_vs_contrastive_sample_efficiency.md"):
        assert _placeholders(answer) <= set(fields), answer


def test_every_figure_the_siamese_answer_quotes_is_written_by_the_script():
    import argparse

    heads = {loss: {"accuracy_train": 0.9, "roc_auc_train": 0.9, "accuracy_test": 0.5, "roc_auc_test": 0.5,
                    "threshold": 1.0} for loss in siamese_verification.LOSSES}
    history = [{"epoch": 1, "Loss/train": 1.0, "Loss/val": 0.8}, {"epoch": 2, "Loss/train": 0.5, "Loss/val": 0.9}]
    fields = siamese_verification.report_fields(heads, {loss: history for loss in heads},
                                                argparse.Namespace(epochs=2, image_size=32), "data", (600, 300))
    assert _placeholders("lab_siamese_bce_vs_contrastive.md") <= set(fields)
    assert fields["bce_loss_test_last"] == "0.900" and fields["contrastive_accuracy_test"] == "50.00"


def test_every_figure_the_embeddings_2d_answers_quote_is_written_by_the_selector_run():
    args = embeddings_2d.parse_args(["--pair-selectors", "all_positive", "hard_negative", "--triplet-selectors",
                                     "all", "hardest", "random_hard", "semi_hard"])  # the run the answers quote
    results, firsts = {}, {}
    for name, method, _ in embeddings_2d.trainings(args):
        logged = {"Loss/train": 0.5, "Loss/val": 0.5}
        logged.update({"softmax": {"Accuracy/train": 0.9, "Accuracy/val": 0.9},
                       "online_triplet": {"NonzeroTriplets/train": 9.0, "NonzeroTriplets/val": 9.0}}.get(method, {}))
        results[name] = {"accuracy_test_1nn": 0.9, "test_spread": 1.0, **logged}
        firsts[name] = logged
    fields = embeddings_2d.report_fields(results, firsts, "data", 3)
    for answer in ("lab_embeddings_2d.md", "lab_embeddings_2d_selectors.md"):
        assert _placeholders(answer) <= set(fields), answer
