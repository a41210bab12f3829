# Ex1 Q2 with the epoch statistics kept in a small dictionary and the step written out.


class Net(nn.Module):
    def __init__(self):
        nn.Module.__init__(self)
        self.FC1 = nn.Linear(784, 128, bias=True)
        self.FC2 = nn.Linear(128, 10, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = torch.reshape(x, (x.shape[0], 784))
        activations = 1 / (1 + torch.exp(-self.FC1(x)))
        return self.FC2(activations)


def train(model, device, train_loader, optimizer, scheduler=None):
    model.train()
    stats = {"loss": 0.0, "correct": 0, "n": 0}
    for x, y in train_loader:
        x = x.to(device)
        y = y.to(device)
        optimizer.zero_grad()
        output = model(x)
        loss = F.cross_entropy(output, y)
        with torch.no_grad():
            stats["loss"] += loss.item() * y.size(0)
            stats["correct"] += torch.sum(torch.argmax(output, dim=1) == y).item()
            stats["n"] += y.size(0)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return stats["loss"] / stats["n"], stats["correct"] / stats["n"]


def test(model, device, test_loader):
    model.eval()
    stats = {"loss": 0.0, "correct": 0, "n": 0}
    with torch.no_grad():
        for x, y in test_loader:
            x, y = x.to(device), y.to(device)
            output = model(x)
            stats["loss"] += F.cross_entropy(output, y, reduction="sum").item()
            stats["correct"] += torch.sum(torch.argmax(output, dim=1) == y).item()
            stats["n"] += y.size(0)
    return stats["loss"] / stats["n"], stats["correct"] / stats["n"]
