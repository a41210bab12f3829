# Ex1 Q4 with an explicit projection (conv + bn) stored only when a block changes shape.


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv_a = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv_b = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        # the skip connection needs its own conv when the shapes differ
        self.needs_projection = stride > 1 or in_planes != planes
        if self.needs_projection:
            self.proj_conv = nn.Conv2d(in_planes, planes, 1, stride, 0, bias=False)
            self.proj_bn = nn.BatchNorm2d(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = F.relu(self.bn1(self.conv_a(x)))
        branch = self.bn2(self.conv_b(branch))
        skip = self.proj_bn(self.proj_conv(x)) if self.needs_projection else x
        return F.relu(branch + skip)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, stem: str = "imagenet",
                 num_blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        assert stem in STEMS, f"stem must be in {STEMS}"
        big = stem == "imagenet"
        self.conv1 = nn.Conv2d(in_channels, 64, 7 if big else 3, 2 if big else 1, 3 if big else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(3, 2, 1) if big else nn.Identity()
        widths = [64, 128, 256, 512]
        previous = 64
        for number, (width, count) in enumerate(zip(widths, num_blocks), start=1):
            setattr(self, f"layer{number}", self._make_layer_from(previous, width, count, 1 if number == 1 else 2))
            previous = width
        self.classifier = nn.Linear(previous, num_classes)

    @staticmethod
    def _make_layer_from(in_planes, planes, blocks, stride):
        return nn.Sequential(*[BasicBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1)
                               for i in range(blocks)])

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        return self._make_layer_from(planes // stride, planes, blocks, stride)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(F.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            y = stage(y)
        return y.mean(dim=(2, 3))  # global average pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
