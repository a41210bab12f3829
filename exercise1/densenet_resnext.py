"""Sibling lab B, part 1: DenseNet-BC and ResNeXt trained on MNIST digits.

DenseNet-BC (Huang et al. 2017): inside a dense block every layer sees the concatenation of all earlier
feature maps and adds ``growth_rate`` (k) new ones through a bottleneck ``BN-ReLU-1x1 conv (4k)-BN-ReLU-3x3
conv (k)``; between blocks a transition ``BN-1x1 conv-2x2 avg-pool`` halves the channels (compression 0.5)
and the resolution (28 -> 14 -> 7 -> 3). ``densenet()`` is the lab's skeleton, blocks [2, 5, 4, 6] (38
convolutions + the linear layer); ``densenet52()`` the lab's 52-convolution answer in the same skeleton,
blocks [2, 2, 4, 16]: 1 stem + 2 x 24 bottleneck + 3 transition convolutions.

ResNeXt (Xie et al. 2017): a bottleneck residual block whose 3x3 convolution is split into ``cardinality``
groups of ``bottleneck_width`` channels (a grouped convolution); the output is expanded x2, and the
bottleneck width doubles at each stage. The lab's stem is a 1x1 convolution to 64 channels.
``resnext32_16x8d()`` = ``ResNeXt([3, 3, 3], 16, 8)``.

All take ``(N, in_channels, 28, 28)`` and return ``(N, num_classes)`` logits.

Run: ``python exercise1/densenet_resnext.py --arch densenet52 --lab-subset`` trains for the lab's 20 epochs
on its 2,000 training digits and tests on its 1,000 (see ``utils/lab_digits.py`` for ``--lab-root``, the
lab's PNG folders); without ``--lab-subset`` it trains on the whole of ``--data-root``. SGD with Nesterov
momentum, a one-cycle learning rate (warm-up then cosine decay), random shifts of +-``--shift`` pixels.
Outputs in ``runs/densenet_resnext/<run>/``: TensorBoard events, ``metrics.json`` (train and test loss and
accuracy per epoch) and ``results.json``; ``checkpoints/densenet_resnext/<run>.pt`` after every epoch
(``--resume --run-name NAME`` continues it). ``python exercise1/q4_resnet.py --arch densenet52`` trains the
same networks with Exercise 1 Q4's recipe.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from utils.augment import random_pad_crop  # noqa: E402
from utils.io import write_json_atomic  # noqa: E402
from utils.lab_digits import add_lab_data_arguments, prepare_lab_run  # noqa: E402
from utils.run_checkpoint import checkpoint_path, keep_final_metrics, resume_epoch, save_epoch  # noqa: E402
from utils.training import (  # noqa: E402
    DRY_RUN_BATCHES, RunLogger, add_training_arguments, check_non_negative, default_run_name, parse_training_args,
    progress_disabled,
)


# --------------------------------------------------------------------------- DenseNet-BC
class DenseBottleneck(nn.Module):
    """``BN-ReLU-1x1 (4k)-BN-ReLU-3x3 (k)``, output concatenated to the input: C -> C + k channels."""

    def __init__(self, in_planes: int, growth_rate: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([new, x], 1)


class Transition(nn.Module):
    """``BN-1x1 conv-2x2 avg-pool``: compresses the channels and halves the resolution."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """DenseNet-BC: a 3x3 stem of 2k channels (no pooling: a digit is only 28x28), dense blocks separated by
    transitions, BN-ReLU, global average pool, linear.

    Args:
        num_blocks: bottleneck layers per dense block (a transition follows every block but the last).
        growth_rate: k, channels each bottleneck adds.
        reduction: compression of the transitions (0.5 halves the channels).
    """

    def __init__(self, num_blocks: list[int], growth_rate: int = 12, reduction: float = 0.5,
                 num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for index, layers in enumerate(num_blocks):
            block = []
            for _ in range(layers):
                block.append(DenseBottleneck(planes, growth_rate))
                planes += growth_rate
            stages.append(nn.Sequential(*block))
            if index < len(num_blocks) - 1:
                # Transitions halve the resolution: 28 -> 14 -> 7 -> 3 with four blocks.
                compressed = int(math.floor(planes * reduction))
                stages.append(Transition(planes, compressed))
                planes = compressed
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.features(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def densenet(num_classes: int = 10, in_channels: int = 1) -> DenseNet:
    """The lab's DenseNet-BC: blocks [2, 5, 4, 6], growth rate 12, compression 0.5 (39 conv + linear layers)."""
    return DenseNet([2, 5, 4, 6], 12, 0.5, num_classes, in_channels)


def densenet52(num_classes: int = 10, in_channels: int = 1) -> DenseNet:
    """The lab's 52-convolution DenseNet-BC: blocks [2, 2, 4, 16], growth rate 12, compression 0.5.

    Convolutions: the stem (1) + two per bottleneck (2 x 24 = 48) + one per transition (3) = 52, then the
    linear classifier.
    """
    return DenseNet([2, 2, 4, 16], 12, 0.5, num_classes, in_channels)


# --------------------------------------------------------------------------- ResNeXt
class ResNeXtBlock(nn.Module):
    """``1x1 -> grouped 3x3 (cardinality groups) -> 1x1 (x2)`` with batch norm, added to a shortcut.

    ``group_width = cardinality * bottleneck_width`` channels inside; ``2 * group_width`` out.
    """

    expansion = 2

    def __init__(self, in_planes: int, cardinality: int, bottleneck_width: int, stride: int = 1):
        super().__init__()
        group_width = cardinality * bottleneck_width
        out_planes = self.expansion * group_width
        self.conv1 = nn.Conv2d(in_planes, group_width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(group_width)
        self.conv2 = nn.Conv2d(group_width, group_width, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(group_width)
        self.conv3 = nn.Conv2d(group_width, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class ResNeXt(nn.Module):
    """ResNeXt: the lab's stem (a 1x1 convolution to 64 channels, batch norm, ReLU), stages of ``ResNeXtBlock``
    (stride 2 from the second stage on, bottleneck width doubling each stage), global average pool, linear.

    ``ResNeXt([3, 3, 3], 16, 8)`` ends with ``2 * 16 * 8 * 4 = 1024`` channels at 7x7 for a 28x28 input.
    """

    def __init__(self, num_blocks: list[int], cardinality: int, bottleneck_width: int, num_classes: int = 10,
                 in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        planes, width, stages = 64, bottleneck_width, []
        for index, blocks in enumerate(num_blocks):
            layers = []
            for block in range(blocks):
                layers.append(ResNeXtBlock(planes, cardinality, width, stride=2 if index > 0 and block == 0 else 1))
                planes = ResNeXtBlock.expansion * cardinality * width
            stages.append(nn.Sequential(*layers))
            width *= 2
        self.stages = nn.Sequential(*stages)
        self.linear = nn.Linear(planes, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature maps, ``(N, 2 * cardinality * final width, H / 4, W / 4)``."""
        return self.stages(F.relu(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def resnext32_16x8d(num_classes: int = 10, in_channels: int = 1) -> ResNeXt:
    """The lab's ResNeXt: three stages of 3 blocks, cardinality 16, bottleneck width 8 (doubling)."""
    return ResNeXt([3, 3, 3], 16, 8, num_classes, in_channels)


ARCHITECTURES = {"densenet": densenet, "densenet52": densenet52, "resnext32_16x8d": resnext32_16x8d}
# A checkpoint continues only under the settings that shaped it (model, schedule, data).
RESUME_SETTINGS = ("arch", "epochs", "batch_size", "lr", "weight_decay", "momentum", "seed", "lab_subset",
                   "lab_root", "data_root")


def count_convolutions(model: nn.Module) -> int:
    """Number of ``nn.Conv2d`` layers (the lab counts convolutions; the linear classifier comes on top)."""
    return sum(isinstance(module, nn.Conv2d) for module in model.modules())


# --------------------------------------------------------------------------- training
def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, generator: torch.Generator,
                shift: int, max_batches: int | None = None) -> tuple[float, float]:
    """One epoch of SGD over the training digits in an order drawn from ``generator``: (mean loss, accuracy)."""
    from tqdm import tqdm

    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    batches = torch.randperm(len(labels), generator=generator).to(labels.device).split(batch_size)
    for step, index in enumerate(tqdm(batches, leave=False, disable=progress_disabled())):
        if step == max_batches:
            break
        inputs, targets = images[index], labels[index]
        if shift:
            inputs = random_pad_crop(inputs, shift, generator)
        logits = model(inputs.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(logits, targets)
        if not torch.isfinite(loss):
            raise SystemExit(f"error: the training loss became {loss.item()} at step {step + 1}: lower --lr "
                             f"(now {optimizer.defaults['lr']})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
    return total_loss / seen, correct / seen


@torch.no_grad()
def test(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on held-out digits, in eval mode (batch-norm running statistics)."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start: start + batch_size].contiguous(memory_format=torch.channels_last))
        targets = labels[start: start + batch_size]
        total_loss += F.cross_entropy(logits, targets, reduction="sum").item()
        correct += (logits.argmax(1) == targets).sum().item()
    return total_loss / len(labels), correct / len(labels)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="densenet52", choices=list(ARCHITECTURES),
                        help="network (default densenet52, the lab's 52-convolution DenseNet)")
    parser.add_argument("--shift", type=int, default=2,
                        help="random-shift augmentation in pixels, 0 to turn off (default 2)")
    add_training_arguments(parser, epochs=20, batch_size=64, lr=0.05, weight_decay=5e-4, momentum=0.9)
    add_lab_data_arguments(parser)
    args = parse_training_args(parser, argv)
    check_non_negative(args, "shift")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    device, data = prepare_lab_run(args)
    max_batches = DRY_RUN_BATCHES if args.dry_run else None
    test_images, test_labels = data.test_images, data.test_labels
    if args.dry_run:  # a code check: two batches' worth of test digits, strided (the sample is sorted by digit)
        stride = max(1, len(test_labels) // (2 * args.batch_size))
        test_images, test_labels = test_images[::stride], test_labels[::stride]

    model = ARCHITECTURES[args.arch](num_classes=10, in_channels=1).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay, nesterov=args.momentum > 0)
    steps = math.ceil(len(data.train_labels) / args.batch_size)
    steps = min(steps, max_batches) if max_batches else steps
    # A short warm-up, then a cosine decay to almost 0: a good optimum within the lab's 20 epochs.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps,
                                                    pct_start=0.15)
    run_name = args.run_name or default_run_name()
    checkpoint = checkpoint_path(args, "densenet_resnext", run_name)
    states = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    done = resume_epoch(args, checkpoint, states, RESUME_SETTINGS)
    logger = RunLogger(args.runs_dir, "densenet_resnext", run_name, vars(args))
    convolutions, parameters = count_convolutions(model), sum(p.numel() for p in model.parameters())
    print(f"Model: {args.arch}, {convolutions} convolutions + 1 linear layer, {parameters:,} parameters, "
          f"device {device}; TensorBoard: {logger.directory}")

    generator = torch.Generator()
    for epoch in range(done + 1, args.epochs + 1):
        generator.manual_seed(args.seed * 1_000_003 + epoch)  # epoch e's batches depend on (seed, e) only
        learning_rate = optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        train_loss, train_accuracy = train_epoch(model, optimizer, scheduler, data.train_images, data.train_labels,
                                                 batch_size=args.batch_size, generator=generator, shift=args.shift,
                                                 max_batches=max_batches)
        seconds = time.perf_counter() - started
        test_loss, test_accuracy = test(model, test_images, test_labels)
        logger.log_epoch(epoch, {"Loss/train": train_loss, "Accuracy/train": train_accuracy, "Loss/test": test_loss,
                                 "Accuracy/test": test_accuracy, "LearningRate": learning_rate,
                                 "Time/train_epoch_s": seconds})
        save_epoch(checkpoint, epoch, states, logger.config)
        print(f"epoch {epoch:3d}/{args.epochs}  train loss {train_loss:.4f} acc {100 * train_accuracy:6.2f}%  "
              f"test loss {test_loss:.4f} acc {100 * test_accuracy:6.2f}%", flush=True)

    test_loss, test_accuracy = test(model, test_images, test_labels)
    results = {"data": data.source, "arch": args.arch, "convolutions": convolutions, "parameters": parameters,
               "epochs": args.epochs, "accuracy_test": test_accuracy, "loss_test": test_loss,
               "errors_test": round((1 - test_accuracy) * len(test_labels)), "test_size": len(test_labels),
               "train_size": len(data.train_labels)}
    write_json_atomic(logger.directory / "results.json", results)
    keep_final_metrics(logger)
    logger.save(data=data.source)
    logger.close()
    print(f"Test accuracy ({args.arch}, {args.epochs} epochs): {100 * test_accuracy:.2f}% "
          f"({results['errors_test']} errors on {len(test_labels):,} digits; {data.source})")
    return results


if __name__ == "__main__":
    main()
