# Ex2 Q2: sort the distances once and read the hardest pairs from the sorted order.


def _pair_masks(labels):
    n = labels.shape[0]
    equal = labels.view(n, 1).eq(labels.view(1, n))
    diagonal = torch.eye(n, dtype=torch.bool, device=labels.device)
    return equal.logical_and(diagonal.logical_not()), equal.logical_not()


def mine_batch_hard(distances: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> Triplets:
    _check_labels(distances, labels)
    pos_mask, neg_mask = _pair_masks(labels)
    dist = distances.detach().clone()
    # A stable descending sort keeps the first index first among equal distances.
    order = torch.sort(dist.masked_fill(pos_mask.logical_not(), -1.0), dim=1, descending=True, stable=True).indices
    far_positive = order[:, 0]
    order = torch.sort(dist.masked_fill(neg_mask.logical_not(), float("inf")), dim=1, stable=True).indices
    near_negative = order[:, 0]
    usable = (pos_mask.sum(1) > 0) & (neg_mask.sum(1) > 0)
    anchor_ids = usable.nonzero(as_tuple=True)[0]
    return anchor_ids, far_positive[anchor_ids], near_negative[anchor_ids]


def mine_batch_all(distances: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> Triplets:
    _check_labels(distances, labels)
    pos_mask, neg_mask = _pair_masks(labels)
    cube = pos_mask[:, :, None] * neg_mask[:, None, :]
    triples = cube.nonzero()
    return triples[:, 0], triples[:, 1], triples[:, 2]


def mine_semi_hard(distances: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> Triplets:
    _check_labels(distances, labels)
    pos_mask, neg_mask = _pair_masks(labels)
    dist = distances.detach()
    a_idx, p_idx = pos_mask.nonzero(as_tuple=True)
    ap = dist[a_idx, p_idx][:, None]
    an = dist[a_idx]
    candidates = neg_mask[a_idx] & (an > ap) & (an < ap + margin)
    scores = torch.where(candidates, an, torch.tensor(float("inf"), device=dist.device))
    best_n = scores.argmin(dim=1)
    has = candidates.any(dim=1)
    return a_idx[has], p_idx[has], best_n[has]


def triplet_margin_terms(d_ap: torch.Tensor, d_an: torch.Tensor, margin: float, soft_margin: bool) -> torch.Tensor:
    z = d_ap - d_an
    return F.softplus(z) if soft_margin else (z + margin).clamp_min(0)


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.3
) -> torch.Tensor:
    rows = anchor.size(0)
    if rows == 0:
        return 0.0 * anchor.sum()
    ap = pairwise_euclidean(anchor, positive).diagonal()
    an = pairwise_euclidean(anchor, negative).diagonal()
    return triplet_margin_terms(ap, an, margin, soft_margin=False).sum() / rows


class TripletLoss(nn.Module):
    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if features.dtype != torch.float32 and features.dtype != torch.float64:
            features = features.to(torch.float32)
        dist = pairwise_euclidean(features)
        trip = MINERS[self.mining](dist, labels.to(dist.device), self.margin)
        values = triplet_margin_terms(dist[trip[0], trip[1]], dist[trip[0], trip[2]], self.margin,
                                      self.soft_margin)
        if self.mining == "batch_all":
            active = values > 0
            count = int(active.sum())
            return values[active].sum() / count if count else features.sum() * 0.0
        return values.mean() if values.numel() > 0 else features.sum() * 0.0
