"""Exercise 1 Q4: a hand-written ResNet-18 trained on MNIST with Q2's ``train`` and ``test``.

ResNet-18 = a stem, four stages of two ``BasicBlock`` each (64-128-256-512 channels, stride 2 from the
second stage on), global average pooling and one linear classifier. The stem is a measured choice for
28x28 digits (``--stem``):

- ``imagenet`` (default): torchvision's 7x7/2 convolution + 3x3/2 max-pool. The body then works on 7x7
  maps, which keeps a CPU run fast (66 MFLOPs per image).
- ``cifar``: a 3x3/1 convolution and no pool, the usual choice for 32x32 images. The body works on 28x28
  maps: 14x the FLOPs for a small gain in accuracy; use it on a GPU.

Training is Q2's loop (``train`` with a per-batch learning-rate schedule, ``test``) on the same loaders,
with random shifts of the digits as a batch transform of the training loader. After each epoch the
checkpoint is saved first, then the validation split (the last 10,000 training digits) is evaluated; the
official 10,000 test digits are evaluated once, at the end. ``--resume`` continues a run from its last
checkpoint; a NaN loss ends the run with one line.

The default is sized for 3 minutes on 2 CPU cores: 2 epochs over a stratified 37,500 of the 50,000
training digits (75,000 images seen), batch 128, SGD + Nesterov momentum 0.9, peak lr 0.1 with a warm-up
and a linear decay, weight decay 5e-4, shifts of +-2 px, zero-initialised residual branches, channels-last
tensors. The README gives its accuracy and a longer recipe.

Run: ``python exercise1/q4_resnet.py`` (full MNIST, fetched once into data/).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from exercise1.densenet_resnext import ARCHITECTURES as SIBLING_ARCHITECTURES  # noqa: E402
from exercise1.q2_module_mlp import test, train  # noqa: E402
from utils.augment import random_pad_crop  # noqa: E402
from utils.io import load_checkpoint  # noqa: E402
from utils.mnist import add_mnist_arguments, mnist_loaders, prepare_mnist_run  # noqa: E402
from utils.training import (  # noqa: E402
    DRY_RUN_BATCHES,
    RunLogger,
    add_training_arguments,
    checkpoint_path_for,
    ensure_writable_folder,
    epoch_line,
    parse_training_args,
    progress_disabled,
    save_run_checkpoint,
)

SCRIPT = "q4_resnet"
STEMS = ("imagenet", "cifar")


# BEGIN SOLUTION
class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, added to a shortcut: ``relu(F(x) + shortcut(x))``.

    The shortcut is the identity, or a 1x1 strided convolution + batch norm when the block changes the
    resolution or the number of channels (so the two branches have the same shape).
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))
# END SOLUTION


# BEGIN SOLUTION
class ResNet18(nn.Module):
    """ResNet-18 for small grey images: ``(N, in_channels, H, W) -> (N, num_classes)`` logits.

    Args:
        num_classes: number of output classes.
        in_channels: image channels (1 for MNIST).
        stem: ``"imagenet"`` (7x7/2 conv + max-pool) or ``"cifar"`` (3x3/1 conv, no pool).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, stem: str = "imagenet",
                 num_blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.in_planes = 64
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * BasicBlock.expansion, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        # Only the first block of a stage changes resolution; the others keep it.
        layers = []
        for block_stride in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, block_stride))
            self.in_planes = planes * BasicBlock.expansion
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 512-d representation before the classifier."""
        out = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))
# END SOLUTION


def zero_init_residual_branches(model: nn.Module) -> None:
    """Set the last batch-norm scale of every ``BasicBlock`` to 0, so each block starts as its shortcut.

    The residual branches then add nothing at first: the untrained network behaves like a shallow one
    and trains faster (Goyal et al., 2017; torchvision's ``zero_init_residual=True``).
    """
    for module in model.modules():
        if isinstance(module, BasicBlock):
            nn.init.zeros_(module.bn2.weight)


def build_model(arch: str = "resnet18", stem: str = "imagenet", num_classes: int = 10,
                zero_init_residual: bool = False) -> nn.Module:
    """The network named by ``--arch``: this file's ResNet-18, or a sibling lab's DenseNet/ResNeXt."""
    if arch == "resnet18":
        model = ResNet18(num_classes=num_classes, in_channels=1, stem=stem)
        if zero_init_residual:
            zero_init_residual_branches(model)
        return model
    if arch in SIBLING_ARCHITECTURES:  # sibling lab B, exercise1/densenet_resnext.py (their own 3x3 stems)
        return SIBLING_ARCHITECTURES[arch](num_classes=num_classes, in_channels=1)
    raise ValueError(f"--arch: unknown architecture {arch!r}")


def warmup_linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                           warmup_fraction: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-batch learning-rate factor: a linear warm-up from 0.04 to 1, then a linear decay to 0.

    The warm-up keeps the first steps of a high learning rate from throwing the weights far away; decaying
    to 0 lets a short training settle in a minimum (for a budget of one or two epochs it did at least as
    well as a cosine here). A ``LambdaLR`` saves only its step count, so a run resumed with another
    ``--epochs`` follows the schedule of the new length.
    """
    warmup_steps = max(1, int(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return 0.04 + 0.96 * step / warmup_steps
        return max(0.0, 1.0 - (step - warmup_steps) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18", choices=["resnet18", *SIBLING_ARCHITECTURES],
                        help="network (default resnet18; the others are the DenseNet/ResNeXt sibling lab)")
    parser.add_argument("--stem", default="imagenet", choices=STEMS,
                        help="input stem (default imagenet: 14x fewer FLOPs than cifar)")
    parser.add_argument("--shift", type=int, default=2,
                        help="random-shift augmentation in pixels, 0 to turn off (default 2)")
    parser.add_argument("--zero-init-residual", action=argparse.BooleanOptionalAction, default=True,
                        help="start each residual block as its shortcut (default on; resnet18 only)")
    parser.add_argument("--train-size", type=int, default=37_500,
                        help="training images: a stratified random subset of the training split, 0 for all of "
                             "it (default 37500, sized for 3 minutes on 2 CPU cores)")
    add_training_arguments(parser, epochs=2, batch_size=128, lr=0.1, weight_decay=5e-4, momentum=0.9)
    add_mnist_arguments(parser)
    args = parse_training_args(parser, argv)
    if args.batch_size < 2:
        raise SystemExit(f"error: --batch-size must be >= 2 (batch norm normalises over the batch), "
                         f"got {args.batch_size}")
    if args.shift < 0 or args.train_size < 0:
        raise SystemExit(f"error: --shift and --train-size must be >= 0, got {args.shift} and {args.train_size}")
    return args


def model_config(args: argparse.Namespace) -> dict[str, Any]:
    """What a checkpoint records of the network, checked by ``--resume``."""
    return {"script": SCRIPT, "arch": args.arch, "stem": args.stem if args.arch == "resnet18" else None,
            "zero_init_residual": args.zero_init_residual}


def load_resume_state(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The checkpoint ``--resume`` continues from; anything else is refused in one line naming the file."""
    if not path.is_file():
        raise SystemExit(f"error: --resume: no checkpoint at {path}")
    try:
        state = load_checkpoint(path)
    except ValueError as error:
        raise SystemExit(f"error: --resume: {error}") from None
    config = state.get("config")
    if not (isinstance(config, dict) and config.get("script") == SCRIPT
            and {"epoch", "model", "optimizer", "scheduler"} <= set(state)):
        raise SystemExit(f"error: --resume: {path} is not a checkpoint of {SCRIPT}.py")
    wanted = model_config(args)
    if (config.get("arch"), config.get("stem")) != (wanted["arch"], wanted["stem"]):
        raise SystemExit(f"error: --resume: {path} holds {config.get('arch')} (stem {config.get('stem')}); these "
                         f"flags build {wanted['arch']} (stem {wanted['stem']}): pass the same --arch and --stem")
    return state


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    checkpoint_dir = ensure_writable_folder(Path(args.checkpoint_dir) / SCRIPT, "--checkpoint-dir")
    state = load_resume_state(checkpoint_dir / f"{args.run_name}.pt", args) if args.resume else None
    start_epoch = state["epoch"] + 1 if state else 1
    device, data = prepare_mnist_run(args, validation=True)
    data = data.subset_train(args.train_size or None, seed=args.seed)
    if len(data.train_labels) < 2:
        raise SystemExit("error: ResNet-18 needs at least 2 training images (batch norm)")

    # Channels-last is the layout oneDNN's CPU convolutions prefer (measured here: +10-20 % training img/s).
    model = build_model(args.arch, args.stem, zero_init_residual=args.zero_init_residual).to(
        device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay, nesterov=args.momentum > 0)
    shift = (lambda images, generator: random_pad_crop(images, args.shift, generator)) if args.shift else None
    loaders = mnist_loaders(data, args.batch_size, seed=args.seed, first_epoch=start_epoch, transform=shift,
                            max_batches=DRY_RUN_BATCHES if args.dry_run else None)
    scheduler = warmup_linear_schedule(optimizer, args.epochs * len(loaders.train))
    if state:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            raise SystemExit(f"error: --resume: {args.run_name}.pt does not fit this model "
                             f"({str(error).splitlines()[0][:120]})") from None

    # purge_step: a resumed run's TensorBoard curves show each epoch once.
    run = RunLogger(args.runs_dir, SCRIPT, args.run_name, vars(args), purge_step=start_epoch,
                    stop_on_divergence=True)
    checkpoint_path = checkpoint_path_for(args, SCRIPT, run.run_name)
    run.save(data=data.describe())
    stem = f" ({args.stem} stem)" if args.arch == "resnet18" else ""
    print(f"Model: {args.arch}{stem}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"device {device}; TensorBoard: {run.directory}")
    if state:
        print(f"Resumed {checkpoint_path} after epoch {state['epoch']}" +
              (": the run is finished, only the test is evaluated" if start_epoch > args.epochs else ""))

    for epoch in range(start_epoch, args.epochs + 1):
        learning_rate = optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        batches = tqdm(loaders.train, desc=f"epoch {epoch}/{args.epochs}", leave=False,
                       disable=progress_disabled())
        train_loss, train_accuracy = train(model, device, batches, optimizer, scheduler)
        seconds = time.perf_counter() - started
        scalars = {"Loss/train": train_loss, "Accuracy/train": train_accuracy, "LearningRate": learning_rate,
                   "Time/train_epoch_s": seconds}
        run.stop_if_diverged(epoch, scalars)
        # Saved before anything else can fail: an error in the evaluation loses no training.
        save_run_checkpoint(checkpoint_path, {
            "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "config": model_config(args), "metrics": scalars,
        })
        val_loss, val_accuracy = test(model, device, loaders.val)
        scalars.update({"Loss/val": val_loss, "Accuracy/val": val_accuracy})
        run.log_epoch(epoch, scalars)
        images = len(loaders.train) * args.batch_size
        print(f"{epoch_line(epoch, args.epochs, scalars)}  ({images / seconds:.0f} img/s)", flush=True)

    test_loss, test_accuracy = test(model, device, loaders.test)
    if start_epoch <= args.epochs:  # a resumed finished run has its test point in TensorBoard already
        run.log_step(args.epochs, {"Loss/test": test_loss, "Accuracy/test": test_accuracy})
    run.final.update({"Loss/test": test_loss, "Accuracy/test": test_accuracy})
    run.save()
    run.close()
    print(f"Test accuracy: {100 * test_accuracy:.2f}% on {len(data.test_labels):,} test images "
          f"({data.source}); checkpoint {checkpoint_path}")
    return dict(run.final)


if __name__ == "__main__":
    main()
