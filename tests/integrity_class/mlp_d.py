# Ex1 Q2 with a shared helper that runs one pass over a loader, training or not.


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        n_in, n_hidden, n_out = 784, 128, 10
        self.FC1 = nn.Linear(n_in, n_hidden)
        self.FC2 = nn.Linear(n_hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, 784)
        return self.FC2(self.FC1(flat).sigmoid())


def _one_pass(model, device, loader, optimizer=None, scheduler=None):
    sum_loss = 0.0
    right = 0
    total = 0
    for inputs, targets in loader:
        inputs = inputs.to(device)
        targets = targets.to(device)
        if optimizer is not None:
            optimizer.zero_grad()
        logits = model(inputs)
        batch_loss = F.cross_entropy(logits, targets)
        if optimizer is not None:
            batch_loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        sum_loss = sum_loss + batch_loss.item() * targets.shape[0]
        right = right + (logits.argmax(-1) == targets).long().sum().item()
        total = total + targets.shape[0]
    return sum_loss / total, right / total


def train(model, device, train_loader, optimizer, scheduler=None):
    model.train()
    return _one_pass(model, device, train_loader, optimizer, scheduler)


def test(model, device, test_loader):
    model.eval()
    with torch.no_grad():
        return _one_pass(model, device, test_loader)
