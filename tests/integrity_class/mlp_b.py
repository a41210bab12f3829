# Ex1 Q2, keeping every batch's statistics in lists and reducing them at the end of the epoch.


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.FC1 = nn.Linear(784, 128)
        self.FC2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.FC2(F.sigmoid(self.FC1(x.flatten(start_dim=1))))


def train(model, device, train_loader, optimizer, scheduler=None):
    model.train()
    batch_losses, batch_sizes, batch_hits = [], [], []
    for data, target in train_loader:
        data = data.to(device)
        target = target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.cross_entropy(output, target)
        loss.backward()
        optimizer.step()
        if scheduler:
            scheduler.step()
        batch_losses.append(loss.item())
        batch_sizes.append(target.numel())
        batch_hits.append(int(output.detach().max(dim=1).indices.eq(target).sum()))
    n = sum(batch_sizes)
    mean_loss = sum(l * s for l, s in zip(batch_losses, batch_sizes)) / n
    return mean_loss, sum(batch_hits) / n


@torch.no_grad()
def test(model, device, test_loader):
    model.eval()
    losses, hits, n = [], 0, 0
    for data, target in test_loader:
        data, target = data.to(device), target.to(device)
        scores = model(data)
        losses.append(F.cross_entropy(scores, target, reduction="sum"))
        hits += int((scores.max(dim=1).indices == target).sum())
        n += target.numel()
    return float(torch.stack(losses).sum()) / n, hits / n
