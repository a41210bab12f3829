# Ex1 Q2 in the style of pytorch/examples: enumerate over batches, a Flatten module, tensors accumulated.


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.FC1 = nn.Linear(in_features=784, out_features=128)
        self.FC2 = nn.Linear(in_features=128, out_features=10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.FC1(self.flatten(x))
        z = torch.sigmoid(z)
        z = self.FC2(z)
        return z


def train(model, device, train_loader, optimizer, scheduler=None):
    model.train()
    running = torch.zeros(())
    good = torch.zeros((), dtype=torch.long)
    count = 0
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.cross_entropy(output, target)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        running += loss.detach().cpu() * data.shape[0]
        good += (output.argmax(dim=1, keepdim=True) == target.view_as(output.argmax(dim=1, keepdim=True))).sum().cpu()
        count += data.shape[0]
    return running.item() / count, good.item() / count


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    count = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.cross_entropy(output, target, reduction="sum").item()  # sum up batch loss
            pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
            correct += pred.eq(target.view_as(pred)).sum().item()
            count += len(data)
    return test_loss / count, correct / count
