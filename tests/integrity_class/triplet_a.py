# Ex2 Q2 written with plain Python loops over the batch: slow but easy to check by hand.


def mine_batch_hard(distances: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> Triplets:
    _check_labels(distances, labels)
    n = len(labels)
    a_list, p_list, n_list = [], [], []
    for a in range(n):
        same = [j for j in range(n) if j != a and labels[j] == labels[a]]
        other = [j for j in range(n) if labels[j] != labels[a]]
        if len(same) == 0 or len(other) == 0:
            continue  # this anchor cannot form a triplet
        # max/min return the first index on ties, as asked
        farthest = max(same, key=lambda j: distances[a, j].item())
        nearest = min(other, key=lambda j: distances[a, j].item())
        a_list.append(a)
        p_list.append(farthest)
        n_list.append(nearest)
    as_long = lambda values: torch.tensor(values, dtype=torch.long)
    return as_long(a_list), as_long(p_list), as_long(n_list)


def mine_batch_all(distances: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> Triplets:
    _check_labels(distances, labels)
    n = len(labels)
    triplets = []
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            for neg in range(n):
                if labels[neg] != labels[a]:
                    triplets.append((a, p, neg))
    if not triplets:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone(), empty.clone()
    columns = torch.tensor(triplets, dtype=torch.long)
    return columns[:, 0], columns[:, 1], columns[:, 2]


def mine_semi_hard(distances: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> Triplets:
    _check_labels(distances, labels)
    n = len(labels)
    found = [[], [], []]
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            d_ap = distances[a, p].item()
            best, best_d = None, float("inf")
            for neg in range(n):
                d_an = distances[a, neg].item()
                if labels[neg] != labels[a] and d_ap < d_an < d_ap + margin and d_an < best_d:
                    best, best_d = neg, d_an
            if best is not None:
                found[0].append(a)
                found[1].append(p)
                found[2].append(best)
    return tuple(torch.tensor(column, dtype=torch.long) for column in found)


def triplet_margin_terms(d_ap: torch.Tensor, d_an: torch.Tensor, margin: float, soft_margin: bool) -> torch.Tensor:
    difference = d_ap - d_an
    if soft_margin:
        return torch.log1p(torch.exp(difference))
    return torch.clamp(difference + margin, min=0.0)


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.3
) -> torch.Tensor:
    if anchor.shape[0] == 0:
        return anchor.sum() * 0.0
    d_ap = safe_sqrt(((anchor - positive) ** 2).sum(dim=1))
    d_an = safe_sqrt(((anchor - negative) ** 2).sum(dim=1))
    return triplet_margin_terms(d_ap, d_an, margin, False).mean()


class TripletLoss(nn.Module):
    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        dist = pairwise_euclidean(features)
        miner = MINERS[self.mining]
        a, p, n = miner(dist.detach(), labels, self.margin)
        if len(a) == 0:
            return features.sum() * 0.0  # keeps the graph alive
        losses = triplet_margin_terms(dist[a, p], dist[a, n], self.margin, self.soft_margin)
        if self.mining == "batch_all":
            losses = losses[losses > 0]
            if len(losses) == 0:
                return features.sum() * 0.0
        return losses.mean()
