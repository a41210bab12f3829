# Ex1 Q2: the MLP and its train/test loops, counting correct predictions batch by batch.


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.FC1 = nn.Linear(28 * 28, 128)
        self.FC2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.size(0), -1)
        hidden = torch.sigmoid(self.FC1(x))
        return self.FC2(hidden)


def train(model, device, train_loader, optimizer, scheduler=None):
    model.train()
    loss_sum, n_correct, n_images = 0.0, 0, 0
    for images, labels in train_loader:
        images = images.to(device)
        labels = labels.to(device)
        optimizer.zero_grad()
        output = model(images)
        loss = F.cross_entropy(output, labels)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        batch = images.size(0)
        loss_sum += loss.item() * batch
        n_correct += output.argmax(dim=1).eq(labels).sum().item()
        n_images += batch
    return loss_sum / n_images, n_correct / n_images


def test(model, device, test_loader):
    model.eval()
    loss_sum, n_correct, n_images = 0.0, 0, 0
    with torch.no_grad():
        for images, labels in test_loader:
            images = images.to(device)
            labels = labels.to(device)
            output = model(images)
            loss_sum += F.cross_entropy(output, labels, reduction="sum").item()
            n_correct += output.argmax(dim=1).eq(labels).sum().item()
            n_images += images.size(0)
    return loss_sum / n_images, n_correct / n_images
