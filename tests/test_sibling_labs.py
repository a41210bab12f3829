"""Issue 7, the sibling labs: network C, pair losses, online selectors, LFW pair files, recall@k, and a --dry-run
of every script (DenseNet/ResNeXt and FaceNet: tests/test_lab_densenet_facenet.py). References are brute-force
loops and hand-computed numbers."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from exercise2 import ce_vs_contrastive, embeddings_2d, siamese_verification
from exercise2.siamese_verification import NetworkC, SiameseVerifier, parse_lfw_pairs, parse_pair_list
from loss import ContrastiveLoss, OnlineContrastiveLoss, OnlineTripletLoss, contrastive_loss
from utils.embedding import (
    best_threshold, centroid_predict, identity_batches, knn_predict, random_pairs, random_triplets, recall_at_k,
    select_pairs, select_triplets,
)
from utils.RandomSampler import RandomIdentitySampler
from utils.synthetic_market import generate_market
from utils.TripletLoss import pairwise_euclidean


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


def test_online_contrastive_loss_matches_brute_force():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(12, 3, generator=generator)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    distance = lambda i, j: float(np.linalg.norm(features[i].numpy() - features[j].numpy()))  # noqa: E731
    pairs = list(itertools.combinations(range(12), 2))
    positive = [distance(i, j) for i, j in pairs if labels[i] == labels[j]]
    negative = sorted(distance(i, j) for i, j in pairs if labels[i] != labels[j])[: len(positive)]
    margin = 1.5
    expected = (sum(d * d for d in positive) + sum(max(0.0, margin - d) ** 2 for d in negative)) / (2 * len(positive))
    assert OnlineContrastiveLoss(margin)(features, labels).item() == pytest.approx(expected, rel=1e-5)


def test_online_triplet_loss_is_the_mean_hinge_of_the_selected_triplets():
    generator = torch.Generator().manual_seed(2)
    features, labels = torch.randn(10, 2, generator=generator), torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3])
    distances = pairwise_euclidean(features)
    triplets = select_triplets(distances, labels, "hardest", 1.0)
    expected = np.mean([max(0.0, 1.0 + distances[a, p].item() - distances[a, n].item()) for a, p, n in zip(*triplets)])
    assert OnlineTripletLoss(1.0, "hardest")(features, labels).item() == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- selectors against brute force
def _random_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3])
    return pairwise_euclidean(torch.randn(12, 2, generator=generator)), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_selector_keeps_all_positive_pairs_and_the_hardest_negatives(seed):
    distances, labels = _random_batch(seed)
    positive_pairs, negative_pairs = select_pairs(distances, labels, "hard_negatives")
    all_pairs = list(itertools.combinations(range(12), 2))
    assert sorted(map(tuple, positive_pairs.tolist())) == [(i, j) for i, j in all_pairs if labels[i] == labels[j]]
    negatives = [(i, j) for i, j in all_pairs if labels[i] != labels[j]]
    chosen = set(map(tuple, negative_pairs.tolist()))
    assert len(chosen) == len(negative_pairs) == len(positive_pairs)
    assert chosen <= set(negatives)
    worst_chosen = max(distances[i, j].item() for i, j in chosen)
    assert all(distances[i, j].item() >= worst_chosen for i, j in negatives if (i, j) not in chosen)
    _, all_negatives = select_pairs(distances, labels, "all")
    assert sorted(map(tuple, all_negatives.tolist())) == negatives


def _candidates(distances, labels, margin):
    """Brute force: for every (a, p) pair, its violating negatives and its semi-hard negatives."""
    n = len(labels)
    result = {}
    for a, p in itertools.product(range(n), repeat=2):
        if a == p or labels[a] != labels[p]:
            continue
        d_ap = distances[a, p].item()
        negatives = [k for k in range(n) if labels[k] != labels[a]]
        violating = [k for k in negatives if distances[a, k].item() < d_ap + margin]
        semi_hard = [k for k in violating if distances[a, k].item() > d_ap]
        result[(a, p)] = (violating, semi_hard)
    return result


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_selectors_return_valid_triplets_of_the_right_hardness(seed):
    distances, labels = _random_batch(seed)
    margin = 0.4
    candidates = _candidates(distances, labels, margin)
    d = lambda a, k: distances[a, k].item()  # noqa: E731

    every = {(a, p, k) for a, p, k in itertools.product(range(12), repeat=3)
             if a != p and labels[a] == labels[p] and labels[k] != labels[a]}
    assert set(zip(*(t.tolist() for t in select_triplets(distances, labels, "all", margin)))) == every

    hardest = {(a, p, min(v, key=lambda k: d(a, k))) for (a, p), (v, _) in candidates.items() if v}
    assert set(zip(*(t.tolist() for t in select_triplets(distances, labels, "hardest", margin)))) == hardest

    semi = {(a, p, min(s, key=lambda k: d(a, k))) for (a, p), (_, s) in candidates.items() if s}
    assert set(zip(*(t.tolist() for t in select_triplets(distances, labels, "semi_hard", margin)))) == semi

    chosen_negatives = set()
    for draw in range(5):
        triplets = select_triplets(distances, labels, "random_hard", margin, torch.Generator().manual_seed(draw))
        triplets = list(zip(*(t.tolist() for t in triplets)))
        assert {(a, p) for a, p, _ in triplets} == {pair for pair, (v, _) in candidates.items() if v}
        assert all(k in candidates[(a, p)][0] for a, p, k in triplets)
        chosen_negatives |= set(triplets)
    assert len(chosen_negatives) > len(hardest)  # random, not always the hardest

    batch_hard = set()
    for a in range(12):
        positives = [p for p in range(12) if p != a and labels[p] == labels[a]]
        negatives = [k for k in range(12) if labels[k] != labels[a]]
        batch_hard.add((a, max(positives, key=lambda p: d(a, p)), min(negatives, key=lambda k: d(a, k))))
    assert set(zip(*(t.tolist() for t in select_triplets(distances, labels, "batch_hard", margin)))) == batch_hard


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


# --------------------------------------------------------------------------- evaluation helpers
def test_recall_at_k_on_a_hand_made_case():
    embeddings = torch.tensor([[0.0], [1.0], [10.0], [11.0], [19.5]])
    labels = torch.tensor([0, 0, 1, 2, 1])
    # item 2's neighbours: 11 (label 2), 1 (label 0), 19.5 (label 1); item 4's: 11 (2), 10 (1); item 3 has no match.
    assert recall_at_k(embeddings, labels, (1, 2, 3, 4)) == pytest.approx({1: 0.4, 2: 0.6, 3: 0.8, 4: 0.8})


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
                                   "--runs-dir", str(tmp_path / "runs")])


# --------------------------------------------------------------------------- every script, --dry-run
def test_siamese_verification_dry_run_both_losses(tmp_path):
    market = tmp_path / "market"
    generate_market(market, ids=4, images_per_id=4)
    for loss in ("contrastive", "bce"):
        results = siamese_verification.main([
            "--dry-run", "--loss", loss, "--image-size", "16", "--market-root", str(market), "--train-pairs", "8",
            "--test-pairs", "8", "--batch-size", "4", "--runs-dir", str(tmp_path / "runs"), "--run-name", loss])
        run = tmp_path / "runs" / "siamese_verification" / loss
        assert (run / "roc.png").is_file() and (run / "pairs_train.txt").is_file()
        saved = json.loads((run / "results.json").read_text())
        assert saved["accuracy_test"] == results["accuracy_test"] and 0 <= saved["roc_auc_test"] <= 1


def test_ce_vs_contrastive_dry_run(tmp_path):
    results = ce_vs_contrastive.main(["--dry-run", "--batch-size", "32", "--num-instances", "4", "--tsne-points",
                                      "30", "--runs-dir", str(tmp_path), "--run-name", "d"])
    run = tmp_path / "ce_vs_contrastive" / "d"
    assert set(results) == {"ce", "contrastive", "triplet"}
    assert (run / "tsne.png").is_file() and (run / "recall_at_k.png").is_file()
    saved = json.loads((run / "results.json").read_text())
    assert set(saved["methods"]["ce"]) >= {"accuracy_1nn", "f1_macro", "recall_at_5"}
    assert (run / "triplet" / "metrics.json").is_file()


def test_embeddings_2d_dry_run(tmp_path):
    accuracies = embeddings_2d.main(["--dry-run", "--batch-size", "40", "--num-instances", "4",
                                     "--runs-dir", str(tmp_path), "--run-name", "d"])
    run = tmp_path / "embeddings_2d" / "d"
    assert set(accuracies) == set(embeddings_2d.METHODS)
    for method in embeddings_2d.METHODS:
        assert (run / f"scatter_{method}.png").is_file()
    assert "online_triplet" in (run / "accuracy_table.md").read_text()
