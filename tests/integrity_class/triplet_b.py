# Ex2 Q2 with boolean masks and torch.where: one matrix for the whole batch, no Python loop.


def mine_batch_hard(distances: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> Triplets:
    _check_labels(distances, labels)
    d = distances.detach()
    is_pos, is_neg = positive_negative_masks(labels)
    keep = is_pos.any(dim=1) & is_neg.any(dim=1)
    # Out-of-class entries get -1 (distances are >= 0) or +inf so argmax/argmin never pick them.
    hardest_p = torch.where(is_pos, d, torch.full_like(d, -1.0)).argmax(dim=1)
    hardest_n = torch.where(is_neg, d, torch.full_like(d, float("inf"))).argmin(dim=1)
    idx = torch.arange(len(labels), device=d.device)
    return idx[keep], hardest_p[keep], hardest_n[keep]


def mine_batch_all(distances: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> Triplets:
    _check_labels(distances, labels)
    is_pos, is_neg = positive_negative_masks(labels)
    r = torch.arange(len(labels), device=labels.device)
    grid_a, grid_p, grid_n = torch.meshgrid(r, r, r, indexing="ij")
    ok = is_pos[grid_a, grid_p] & is_neg[grid_a, grid_n]
    return grid_a[ok], grid_p[ok], grid_n[ok]


def mine_semi_hard(distances: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> Triplets:
    _check_labels(distances, labels)
    d = distances.detach()
    is_pos, is_neg = positive_negative_masks(labels)
    out_a, out_p, out_n = [], [], []
    for anchor in range(len(labels)):
        negatives = torch.nonzero(is_neg[anchor]).flatten()
        for positive in torch.nonzero(is_pos[anchor]).flatten().tolist():
            gap = d[anchor, negatives] - d[anchor, positive]
            band = (gap > 0) & (gap < margin)
            if band.any():
                choice = negatives[band][d[anchor, negatives[band]].argmin()]
                out_a.append(anchor)
                out_p.append(positive)
                out_n.append(int(choice))
    make = lambda xs: torch.as_tensor(xs, dtype=torch.int64, device=d.device)
    return make(out_a), make(out_p), make(out_n)


def triplet_margin_terms(d_ap: torch.Tensor, d_an: torch.Tensor, margin: float, soft_margin: bool) -> torch.Tensor:
    if not soft_margin:
        return F.relu(d_ap - d_an + margin)
    return F.softplus(d_ap - d_an)


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.3
) -> torch.Tensor:
    if len(anchor) == 0:
        return torch.zeros((), dtype=anchor.dtype, device=anchor.device) + anchor.sum() * 0
    pos_dist = safe_sqrt((anchor - positive).pow(2).sum(-1))
    neg_dist = safe_sqrt((anchor - negative).pow(2).sum(-1))
    return F.relu(margin + pos_dist - neg_dist).mean()


class TripletLoss(nn.Module):
    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(features.device)
        matrix = pairwise_euclidean(features.float())
        anchors, positives, negatives = MINERS[self.mining](matrix, labels, self.margin)
        per_triplet = triplet_margin_terms(matrix[anchors, positives], matrix[anchors, negatives],
                                           self.margin, self.soft_margin)
        if self.mining == "batch_all":
            per_triplet = per_triplet[per_triplet > 0]
        if per_triplet.numel() == 0:
            # no triplet (or none violates the margin): zero, but still a function of the features
            return (features * 0).sum()
        return per_triplet.sum() / per_triplet.numel()
