"""utils/TripletLoss.py against brute-force loops over every (anchor, positive, negative)."""

from __future__ import annotations

import math

import pytest
import torch

from utils.TripletLoss import (
    TripletLoss,
    mine_batch_all,
    mine_batch_hard,
    mine_semi_hard,
    pairwise_euclidean,
    triplet_loss,
)

MARGIN = 0.3


# --------------------------------------------------------------------------- brute-force references
def distance(x: torch.Tensor, i: int, j: int) -> float:
    return math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(x[i], x[j])))


def hinge(d_ap: float, d_an: float, margin: float, soft: bool) -> float:
    return math.log1p(math.exp(d_ap - d_an)) if soft else max(0.0, margin + d_ap - d_an)


def positives_of(labels: list[int], a: int) -> list[int]:
    return [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]


def negatives_of(labels: list[int], a: int) -> list[int]:
    return [n for n in range(len(labels)) if labels[n] != labels[a]]


def brute_batch_hard(x: torch.Tensor, labels: list[int], margin: float, soft: bool) -> float:
    terms = []
    for a in range(len(labels)):
        positives, negatives = positives_of(labels, a), negatives_of(labels, a)
        if positives and negatives:
            d_ap = max(distance(x, a, p) for p in positives)
            d_an = min(distance(x, a, n) for n in negatives)
            terms.append(hinge(d_ap, d_an, margin, soft))
    return sum(terms) / len(terms) if terms else 0.0


def brute_batch_all(x: torch.Tensor, labels: list[int], margin: float, soft: bool) -> float:
    terms = []
    for a in range(len(labels)):
        for p in positives_of(labels, a):
            for n in negatives_of(labels, a):
                terms.append(hinge(distance(x, a, p), distance(x, a, n), margin, soft))
    active = [t for t in terms if t > 0]
    return sum(active) / len(active) if active else 0.0


def brute_semi_hard(x: torch.Tensor, labels: list[int], margin: float, soft: bool) -> float:
    terms = []
    for a in range(len(labels)):
        for p in positives_of(labels, a):
            d_ap = distance(x, a, p)
            band = [distance(x, a, n) for n in negatives_of(labels, a) if d_ap < distance(x, a, n) < d_ap + margin]
            if band:
                terms.append(hinge(d_ap, min(band), margin, soft))
    return sum(terms) / len(terms) if terms else 0.0


BRUTE = {"batch_hard": brute_batch_hard, "batch_all": brute_batch_all, "semi_hard": brute_semi_hard}


# --------------------------------------------------------------------------- batches
def pk_batch(seed: int, identities: int = 4, per_identity: int = 3, dim: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(identities).repeat_interleave(per_identity)
    labels = labels[torch.randperm(len(labels), generator=generator)]
    return torch.randn(len(labels), dim, generator=generator, dtype=torch.float64), labels


def awkward_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Small-integer embeddings (exact distances, many ties), duplicated rows, a label seen once."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    x = torch.randint(-2, 3, (len(labels), 3), generator=generator).double()
    x[1] = x[0]  # two images of one identity with the same embedding
    x[4] = x[6]  # two identities sharing an embedding
    return x, labels


BATCHES = [pk_batch(seed) for seed in range(4)] + [awkward_batch(seed) for seed in range(4)]
BATCH_IDS = [f"pk{seed}" for seed in range(4)] + [f"awkward{seed}" for seed in range(4)]


@pytest.mark.parametrize("mining", list(BRUTE))
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("batch", BATCHES, ids=BATCH_IDS)
def test_loss_equals_brute_force(mining: str, soft: bool, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, labels = batch
    expected = BRUTE[mining](x, labels.tolist(), MARGIN, soft)
    loss = TripletLoss(margin=MARGIN, mining=mining, soft_margin=soft)(x, labels)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("margin", [0.0, 0.1, 1.0, 5.0])
def test_margin_changes_the_loss_as_the_brute_force_does(margin: float) -> None:
    x, labels = pk_batch(7, identities=5, per_identity=2)
    for mining, brute in BRUTE.items():
        loss = TripletLoss(margin=margin, mining=mining)(x, labels)
        assert loss.item() == pytest.approx(brute(x, labels.tolist(), margin, False), rel=1e-9, abs=1e-12)


def test_float32_matches_float64_brute_force() -> None:
    x, labels = pk_batch(11, identities=8, per_identity=4, dim=16)
    for mining, brute in BRUTE.items():
        loss = TripletLoss(mining=mining)(x.float(), labels)
        assert loss.item() == pytest.approx(brute(x, labels.tolist(), MARGIN, False), rel=1e-4, abs=1e-5)


# --------------------------------------------------------------------------- miners on their own
def test_batch_hard_miner_picks_farthest_positive_and_nearest_negative() -> None:
    x, labels = awkward_batch(1)
    anchors, positives, negatives = mine_batch_hard(pairwise_euclidean(x), labels)
    label_list = labels.tolist()
    expected_anchors = [
        a for a in range(len(label_list)) if positives_of(label_list, a) and negatives_of(label_list, a)
    ]
    assert anchors.tolist() == expected_anchors
    for a, p, n in zip(anchors.tolist(), positives.tolist(), negatives.tolist()):
        assert label_list[p] == label_list[a] and p != a and label_list[n] != label_list[a]
        assert distance(x, a, p) == max(distance(x, a, q) for q in positives_of(label_list, a))
        assert distance(x, a, n) == min(distance(x, a, q) for q in negatives_of(label_list, a))


def test_batch_all_miner_lists_every_valid_triplet() -> None:
    x, labels = awkward_batch(2)
    triplets = set(zip(*(t.tolist() for t in mine_batch_all(pairwise_euclidean(x), labels))))
    label_list = labels.tolist()
    expected = {
        (a, p, n)
        for a in range(len(label_list))
        for p in positives_of(label_list, a)
        for n in negatives_of(label_list, a)
    }
    assert triplets == expected


def test_semi_hard_miner_picks_nearest_negative_inside_the_band() -> None:
    x, labels = pk_batch(3, identities=4, per_identity=4, dim=2)
    margin = 1.0
    anchors, positives, negatives = mine_semi_hard(pairwise_euclidean(x), labels, margin)
    label_list = labels.tolist()
    expected = {}
    for a in range(len(label_list)):
        for p in positives_of(label_list, a):
            d_ap = distance(x, a, p)
            band = [distance(x, a, n) for n in negatives_of(label_list, a) if d_ap < distance(x, a, n) < d_ap + margin]
            if band:
                expected[(a, p)] = min(band)
    assert len(expected) > 0
    mined = {(a, p): distance(x, a, n) for a, p, n in zip(anchors.tolist(), positives.tolist(), negatives.tolist())}
    assert mined.keys() == expected.keys()
    for pair, d_an in mined.items():
        assert d_an == pytest.approx(expected[pair], rel=1e-12)


# --------------------------------------------------------------------------- gradients and edge cases
@pytest.mark.parametrize("mining", list(BRUTE))
@pytest.mark.parametrize("soft", [False, True])
def test_gradient_matches_finite_differences(mining: str, soft: bool) -> None:
    x, labels = pk_batch(5, identities=3, per_identity=3, dim=4)
    x = (x * 0.3).requires_grad_()  # small distances: many triplets inside the margin
    loss_fn = TripletLoss(margin=MARGIN, mining=mining, soft_margin=soft)
    assert loss_fn(x, labels).item() > 0
    assert torch.autograd.gradcheck(lambda features: loss_fn(features, labels), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("mining", list(BRUTE))
def test_coinciding_embeddings_give_finite_gradients(mining: str) -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    x = torch.zeros(6, 8, requires_grad=True)  # every distance is exactly 0
    loss = TripletLoss(margin=MARGIN, mining=mining)(x, labels)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    base = torch.randn(6, 8)
    x = base.clone()
    x[1] = x[0]
    x[3] = x[2]
    x.requires_grad_()
    loss = TripletLoss(margin=MARGIN, mining=mining)(x, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("mining", list(BRUTE))
def test_batch_without_triplets_gives_zero_connected_to_the_graph(mining: str) -> None:
    x = torch.randn(4, 3, requires_grad=True)
    loss = TripletLoss(mining=mining)(x, torch.tensor([0, 1, 2, 3]))  # no positive anywhere
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_pairwise_euclidean_matches_cdist_and_has_exact_zero_diagonal() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    y = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(pairwise_euclidean(x), torch.cdist(x, x), rtol=1e-9, atol=1e-7)
    torch.testing.assert_close(pairwise_euclidean(x, y), torch.cdist(x, y), rtol=1e-9, atol=1e-9)
    assert torch.equal(pairwise_euclidean(x).diagonal(), torch.zeros(7, dtype=torch.float64))


def test_explicit_triplet_loss_is_the_averaged_formula() -> None:
    generator = torch.Generator().manual_seed(1)
    anchor, positive, negative = (torch.randn(6, 4, generator=generator, dtype=torch.float64) for _ in range(3))
    a, p, n = anchor.tolist(), positive.tolist(), negative.tolist()
    expected = sum(max(0.0, 1.0 + math.dist(a[i], p[i]) - math.dist(a[i], n[i])) for i in range(6)) / 6
    assert triplet_loss(anchor, positive, negative, margin=1.0).item() == pytest.approx(expected, rel=1e-12)
    anchor.requires_grad_()
    triplet_loss(anchor, anchor.detach(), negative, margin=1.0).backward()  # d_ap = 0 exactly
    assert torch.isfinite(anchor.grad).all()


def test_bad_arguments_give_one_line_errors() -> None:
    with pytest.raises(ValueError, match="mining") as error:
        TripletLoss(mining="hardest")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="margin"):
        TripletLoss(margin=-1.0)
    with pytest.raises(ValueError, match="labels"):
        TripletLoss()(torch.randn(4, 3), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="features"):
        TripletLoss()(torch.randn(4), torch.tensor([0, 0, 1, 1]))
