# Ex1 Q4: residual branch as an nn.Sequential, stages kept in a ModuleList as well as layer1..layer4.


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn2 = nn.BatchNorm2d(planes)
        self.residual = nn.Sequential(
            nn.Conv2d(in_planes, planes, (3, 3), (stride, stride), (1, 1), bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(),
            nn.Conv2d(planes, planes, (3, 3), (1, 1), (1, 1), bias=False),
            self.bn2,
        )
        self.project = (nn.Sequential(nn.Conv2d(in_planes, planes, (1, 1), (stride, stride), bias=False),
                                      nn.BatchNorm2d(planes))
                        if (stride, in_planes) != (1, planes) else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.project is None else self.project(x)
        return F.relu(self.residual(x) + shortcut)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, stem: str = "imagenet",
                 num_blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        settings = {"imagenet": (7, 2, 3, True), "cifar": (3, 1, 1, False)}
        if stem not in settings:
            raise ValueError(f"unknown stem {stem!r}; choose imagenet or cifar")
        kernel, stride, padding, pooled = settings[stem]
        self.conv1 = nn.Conv2d(in_channels, 64, kernel, stride=stride, padding=padding, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.pooled = pooled
        self.channels = 64
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.stages = nn.ModuleList([self.layer1, self.layer2, self.layer3, self.layer4])
        self.out = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        stage = nn.Sequential()
        for position in range(blocks):
            stage.add_module(str(position), BasicBlock(self.channels, planes, stride if position == 0 else 1))
            self.channels = planes
        return stage

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if self.pooled:
            x = F.max_pool2d(x, 3, 2, 1)
        for stage in self.stages:
            x = stage(x)
        return torch.mean(x, dim=[2, 3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))
