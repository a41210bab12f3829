"""Exercise 2 Q6: train a person re-identification network on Market-1501, then evaluate it (CMC, mAP).

    python main.py                                   # CPU default: ResNet-18 at 64x32 on the synthetic set
    python main.py --backbone resnet50 --height 256 --width 128 --epochs 120 --milestones 40 70 \\
        --erasing 0.5 --data-root data/Market-1501-v15.09.15    # the TP configuration, on a GPU

Training follows the "bag of tricks" recipe (Luo et al. 2019): P x K batches (utils/RandomSampler.py),
flip + pad/crop + random erasing, the batch-hard triplet loss on the embedding plus a label-smoothed
identity cross-entropy (loss.py), Adam with a linear warm-up and step decay, AMP on CUDA.
Evaluation (``evaluate``): L2-normalised embeddings (by default summed with those of the flipped
image), Euclidean query x gallery distances, then ``utils.metrics.compute_cmc_map`` (Market-1501 protocol).

Each split is decoded once into a uint8 tensor on the training device, and batches are gathered by index
and augmented as tensor ops (no per-image work per step). Without ``--data-root`` the embedded synthetic
Market-1501 (utils/synthetic_market.py) is generated into ``data/`` on first use.

Outputs: TensorBoard + metrics.json + results.json under ``runs/main/<run>/``, the checkpoint (rewritten
atomically every epoch, with the model config that ``evaluation_tp.py`` rebuilds the network from)
under ``checkpoints/main/<run>.pt``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torchvision import transforms
from tqdm import tqdm

from data import Market1501
from loss import ReIDLoss
from network import ReIDNet
from utils.augment import random_pad_crop
from utils.io import load_checkpoint, save_checkpoint, write_json_atomic
from utils.metrics import compute_cmc_map, euclidean_distance_matrix
from utils.RandomSampler import RandomIdentitySampler
from utils.synthetic_market import DEFAULT_ROOT, ensure_synthetic_market
from utils.training import (
    DRY_RUN_BATCHES,
    RunLogger,
    add_training_arguments,
    check_positive,
    default_run_name,
    parse_training_args,
    progress_disabled,
    resolve_device,
    seed_everything,
)

SCRIPT = "main"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DRY_RUN_QUERIES, DRY_RUN_OTHER_GALLERY = 16, 32


# --------------------------------------------------------------------------- data
@dataclass
class ImageSet:
    """One split decoded once: ``images`` (N, 3, H, W) uint8, ``labels`` (N,) int64 (index into the split's
    ``unique_ids``), ``ids`` and ``cameras`` (N,) int64 numpy arrays, ``paths`` the image files."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: np.ndarray
    cameras: np.ndarray
    paths: list[str]
    num_classes: int = field(default=0)

    def subset(self, indices: Sequence[int]) -> "ImageSet":
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageSet(self.images[index.to(self.images.device)], self.labels[index.to(self.labels.device)],
                        self.ids[index.numpy()], self.cameras[index.numpy()],
                        [self.paths[i] for i in index.tolist()], self.num_classes)

    def to(self, device: torch.device | str) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device), self.ids, self.cameras, self.paths,
                        self.num_classes)


def load_image_set(root: str | Path, split: str, height: int, width: int, workers: int = 2) -> ImageSet:
    """Decode a Market-1501 split, resized to ``height`` x ``width``, into memory (junk excluded).

    Raises the ``Market1501`` errors (missing folders, bad file names, unreadable images), one line each.
    """
    resize = transforms.Compose([transforms.Resize((height, width), antialias=True), transforms.PILToTensor()])
    dataset = Market1501(root, split, transform=resize)
    # PIL releases the GIL while decoding, so threads overlap the JPEG work; errors surface unchanged.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        images, labels = zip(*pool.map(dataset.__getitem__, range(len(dataset))))
    return ImageSet(
        images=torch.stack(images),
        labels=torch.as_tensor(labels, dtype=torch.long),
        ids=np.asarray(dataset.ids, dtype=np.int64),
        cameras=np.asarray(dataset.cameras, dtype=np.int64),
        paths=list(dataset.imgs),
        num_classes=len(dataset.unique_ids),
    )


def dry_run_subsets(query: ImageSet, gallery: ImageSet) -> tuple[ImageSet, ImageSet]:
    """A few queries and a gallery holding their identities plus a few others: a tiny but valid evaluation."""
    query = query.subset(range(min(DRY_RUN_QUERIES, len(query.ids))))
    related = np.isin(gallery.ids, query.ids)
    others = np.flatnonzero(~related)[:DRY_RUN_OTHER_GALLERY]
    return query, gallery.subset(np.sort(np.concatenate([np.flatnonzero(related), others])))


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 standardised with the ImageNet statistics (as the ResNets expect)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


# --------------------------------------------------------------------------- augmentation
def random_erasing(images: torch.Tensor, probability: float, generator: torch.Generator,
                   area: tuple[float, float] = (0.02, 0.4), min_aspect: float = 0.3) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020) on a normalised batch (N, C, H, W): with ``probability``, one
    rectangle of ``area`` (fraction of the image) and aspect ratio in ``[min_aspect, 1/min_aspect]`` is set
    to 0, the mean colour. Simulates occlusion, which ReID must survive."""
    n, _, height, width = images.shape
    target_area = torch.empty(n).uniform_(area[0], area[1], generator=generator) * height * width
    aspect = torch.exp(torch.empty(n).uniform_(math.log(min_aspect), -math.log(min_aspect), generator=generator))
    box_h = torch.sqrt(target_area * aspect).round().clamp(1, height)
    box_w = torch.sqrt(target_area / aspect).round().clamp(1, width)
    top = (torch.rand(n, generator=generator) * (height - box_h + 1)).floor()
    left = (torch.rand(n, generator=generator) * (width - box_w + 1)).floor()
    erase = torch.rand(n, generator=generator) < probability
    rows = torch.arange(height).view(1, height, 1)
    cols = torch.arange(width).view(1, 1, width)
    inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + box_h).view(n, 1, 1))
              & (cols >= left.view(n, 1, 1)) & (cols < (left + box_w).view(n, 1, 1)) & erase.view(n, 1, 1))
    return images.masked_fill(inside.unsqueeze(1).to(images.device), 0.0)


@dataclass
class ReIDAugmentation:
    """Training augmentation of a normalised batch: horizontal flip, zero-pad + random crop, random erasing.

    Randomness comes from an explicit CPU generator, so an epoch's augmentation depends on the seed only.
    """

    padding: int
    flip_probability: float = 0.5
    erasing_probability: float = 0.5

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        flip = (torch.rand(len(images), generator=generator) < self.flip_probability).to(images.device)
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
        images = random_pad_crop(images, self.padding, generator)
        return random_erasing(images, self.erasing_probability, generator)


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, *, batch_size: int = 128,
                     flip: bool = True) -> torch.Tensor:
    """L2-normalised embeddings (N, feat_dim) of uint8 ``images`` (N, 3, H, W), in eval mode.

    With ``flip`` the embedding of the mirrored image is added first: a pedestrian's identity does not
    depend on the walking direction, and the sum is a cheap test-time ensemble.
    """
    # BEGIN SOLUTION
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = normalize(images[start: start + batch_size].to(device))
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            features = model(batch)[2].float()
            if flip:
                features = features + model(batch.flip(3))[2].float()
        chunks.append(torch.nn.functional.normalize(features, dim=1))
    return torch.cat(chunks)
    # END SOLUTION


def ranking_metrics(distmat: torch.Tensor | np.ndarray, query: ImageSet, gallery: ImageSet,
                    max_rank: int = 50) -> dict[str, Any]:
    """``rank1``, ``rank5``, ``rank10``, ``mAP`` (fractions in [0, 1]) and ``cmc`` (list) of a (Q, G) distance matrix."""
    cmc, mean_ap = compute_cmc_map(distmat, query.ids, gallery.ids, query.cameras, gallery.cameras,
                                   max_rank=max_rank)
    return {"rank1": float(cmc[0]), "rank5": float(cmc[4]), "rank10": float(cmc[9]), "mAP": mean_ap,
            "cmc": [float(value) for value in cmc]}


def query_gallery_distances(model: nn.Module, query: ImageSet, gallery: ImageSet, *, batch_size: int = 128,
                            flip: bool = True) -> torch.Tensor:
    """(Q, G) Euclidean distances between the L2-normalised query and gallery embeddings, in [0, 2]."""
    query_features = extract_features(model, query.images, batch_size=batch_size, flip=flip)
    gallery_features = extract_features(model, gallery.images, batch_size=batch_size, flip=flip)
    return euclidean_distance_matrix(query_features, gallery_features, normalize=False)


def evaluate(model: nn.Module, query: ImageSet, gallery: ImageSet, *, batch_size: int = 128,
             flip: bool = True, max_rank: int = 50) -> dict[str, Any]:
    """Market-1501 evaluation of ``model``'s embedding: ``dict(rank1, rank5, rank10, mAP, cmc)``.

    Query and gallery embeddings are compared by Euclidean distance; the gallery images of the query's
    identity seen by the query's own camera are ignored, and queries left without a true match skipped
    (``utils.metrics.compute_cmc_map``).
    """
    # BEGIN SOLUTION
    distmat = query_gallery_distances(model, query, gallery, batch_size=batch_size, flip=flip)
    return ranking_metrics(distmat, query, gallery, max_rank=max_rank)
    # END SOLUTION


# --------------------------------------------------------------------------- training
def warmup_step_schedule(optimizer: torch.optim.Optimizer, steps_per_epoch: int, warmup_epochs: int,
                         milestones: Sequence[int], gamma: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration learning-rate factor: linear warm-up from 0.1 over ``warmup_epochs``, then times ``gamma``
    after each milestone epoch. Warm-up keeps Adam's first, badly-scaled steps from wrecking the random
    embedding that the triplet loss starts from."""
    warmup_steps = max(1, warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        epoch = step // steps_per_epoch + 1
        warm = 0.1 + 0.9 * min(1.0, step / warmup_steps) if warmup_epochs > 0 else 1.0
        return warm * gamma ** sum(epoch > milestone for milestone in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(
    model: nn.Module,
    criterion: ReIDLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    train_set: ImageSet,
    sampler: RandomIdentitySampler,
    query: ImageSet,
    gallery: ImageSet,
    *,
    epochs: int,
    augmentation: ReIDAugmentation,
    seed: int,
    start_epoch: int = 1,
    eval_every: int = 0,
    eval_batch_size: int = 128,
    flip_test: bool = True,
    max_batches: int | None = None,
    logger: RunLogger | None = None,
    checkpoint_path: Path | None = None,
    checkpoint_config: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Train epochs ``start_epoch..epochs`` on P x K batches; evaluate every ``eval_every`` epochs and after
    the last one; checkpoint after each epoch.

    TensorBoard: ``Loss/<part>`` (triplet, id, total), ``LearningRate`` and ``Accuracy/train_id`` per epoch
    and per step (``*_step``), ``Eval/rank1`` and ``Eval/mAP`` when evaluated. Batches and augmentation of
    epoch ``e`` depend only on ``(seed, e)``, so a resumed run sees what an uninterrupted one would.

    Returns the last epoch's evaluation (``evaluate``'s dict), or None when no epoch was left to run.
    """
    # BEGIN SOLUTION
    device = train_set.images.device
    use_amp = scaler.is_enabled()
    batch_size = sampler.batch_size
    steps_per_epoch = len(sampler) // batch_size
    if max_batches is not None:
        steps_per_epoch = min(steps_per_epoch, max_batches)
    generator = torch.Generator()
    results = None
    for epoch in range(start_epoch, epochs + 1):
        sampler.set_epoch(epoch)
        generator.manual_seed(seed * 100_003 + epoch)
        batches = torch.tensor(list(sampler), dtype=torch.long).view(-1, batch_size)[:steps_per_epoch]
        model.train()
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
        started = time.perf_counter()
        for step, index in enumerate(tqdm(batches, desc=f"epoch {epoch}/{epochs}", leave=False,
                                          disable=progress_disabled())):
            index = index.to(device)
            images = augmentation(normalize(train_set.images[index]), generator)
            labels = train_set.labels[index]
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                _, logits, features = model(images)
                loss, parts = criterion(logits, features.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            learning_rate = optimizer.param_groups[0]["lr"]
            scheduler.step()
            accuracy = (logits.detach().argmax(1) == labels).float().mean()
            for name, value in parts.items():
                sums[name] += value
            sums["accuracy"] += accuracy
            if logger is not None:
                global_step = (epoch - 1) * steps_per_epoch + step + 1
                logger.log_step(global_step, {**{f"Loss/{name}_step": float(value) for name, value in parts.items()},
                                              "LearningRate/step": learning_rate,
                                              "Accuracy/train_id_step": float(accuracy)})
        seconds = time.perf_counter() - started
        metrics = {f"Loss/{name}": float(total) / steps_per_epoch for name, total in sums.items() if name != "accuracy"}
        metrics.update({"Accuracy/train_id": float(sums["accuracy"]) / steps_per_epoch,
                        "LearningRate": optimizer.param_groups[0]["lr"],
                        "Time/train_epoch_s": seconds,
                        "Time/train_images_per_s": steps_per_epoch * batch_size / seconds})
        line = (f"epoch {epoch:3d}/{epochs}  loss {metrics['Loss/total']:.3f} (triplet {metrics['Loss/triplet']:.3f}, "
                f"id {metrics['Loss/id']:.3f})  train id acc {100 * metrics['Accuracy/train_id']:5.1f}%  "
                f"{metrics['Time/train_images_per_s']:.0f} img/s")
        results = None
        if epoch == epochs or (eval_every > 0 and epoch % eval_every == 0):
            started = time.perf_counter()
            results = evaluate(model, query, gallery, batch_size=eval_batch_size, flip=flip_test)
            metrics.update({"Eval/rank1": results["rank1"], "Eval/rank5": results["rank5"],
                            "Eval/rank10": results["rank10"], "Eval/mAP": results["mAP"],
                            "Time/eval_s": time.perf_counter() - started})
            line += f"  rank-1 {100 * results['rank1']:5.1f}%  mAP {100 * results['mAP']:5.1f}%"
        if logger is not None:
            logger.log_epoch(epoch, metrics)
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, {
                "epoch": epoch,
                "config": checkpoint_config or {},
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "metrics": metrics,
            })
        print(line, flush=True)
    return results
    # END SOLUTION


# --------------------------------------------------------------------------- script
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", default=None,
                      help=f"Market-1501 folder (default {DEFAULT_ROOT}, the synthetic set, generated on first use)")
    data.add_argument("--height", type=int, default=64, help="input height in pixels (default 64; TP: 256)")
    data.add_argument("--width", type=int, default=32, help="input width in pixels (default 32; TP: 128)")
    data.add_argument("--workers", type=int, default=2, help="threads decoding the images once (default 2)")
    model = parser.add_argument_group("model and loss")
    model.add_argument("--backbone", default="resnet18", help="torchvision ResNet (default resnet18; TP: resnet50)")
    model.add_argument("--feat-dim", type=int, default=512, help="embedding size, FC1 output (default 512)")
    model.add_argument("--pretrained", action="store_true",
                       help="start from ImageNet weights found in the local torch cache (never downloaded)")
    model.add_argument("--weights", default=None, help="start the backbone from this ResNet state dict file")
    model.add_argument("--margin", type=float, default=0.3, help="triplet margin (default 0.3)")
    model.add_argument("--mining", default="batch_hard", choices=["batch_hard", "batch_all", "semi_hard"],
                       help="triplet mining (default batch_hard)")
    model.add_argument("--triplet-weight", type=float, default=1.0, help="triplet loss weight (default 1)")
    model.add_argument("--id-weight", type=float, default=1.0, help="identity cross-entropy weight (default 1)")
    model.add_argument("--label-smoothing", type=float, default=0.1, help="cross-entropy label smoothing (default 0.1)")
    add_training_arguments(parser, epochs=40, batch_size=64, lr=2e-3, weight_decay=5e-4)
    schedule = parser.add_argument_group("batches and schedule")
    schedule.add_argument("--num-instances", type=int, default=4,
                          help="K, images per identity in a batch; P = batch-size / K (default 4)")
    schedule.add_argument("--warmup-epochs", type=int, default=2, help="linear warm-up epochs (default 2)")
    schedule.add_argument("--milestones", type=int, nargs="*", default=None,
                          help="epochs after which the lr is multiplied by --gamma (default: 70%% and 90%% of --epochs)")
    schedule.add_argument("--gamma", type=float, default=0.1, help="step decay factor (default 0.1)")
    schedule.add_argument("--no-amp", action="store_true", help="disable mixed precision (only used on CUDA)")
    augmentation = parser.add_argument_group("augmentation (horizontal flip always on)")
    augmentation.add_argument("--padding", type=int, default=None,
                              help="pad + random crop shift in pixels (default height / 25: 10 px at 256)")
    augmentation.add_argument("--erasing", type=float, default=0.0,
                              help="random erasing probability (default 0: it slows the short CPU schedule; TP: 0.5)")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--eval-every", type=int, default=0,
                            help="evaluate every N epochs (default 0: after the last epoch only)")
    evaluation.add_argument("--eval-batch-size", type=int, default=128, help="evaluation batch size (default 128)")
    evaluation.add_argument("--no-flip-test", action="store_true",
                            help="embed the image only (default: image + its mirror)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_training_args(build_parser(), argv)
    check_positive(args, "num_instances", "height", "width", "feat_dim", "eval_batch_size", "gamma")
    if args.eval_every < 0 or args.warmup_epochs < 0:
        raise SystemExit("error: --eval-every and --warmup-epochs must be >= 0")
    if args.resume and args.run_name is None:
        raise SystemExit("error: --resume needs --run-name (the run to continue)")
    milestones = args.milestones if args.milestones is not None else [round(0.7 * args.epochs), round(0.9 * args.epochs)]
    padding = args.padding if args.padding is not None else max(1, round(args.height / 25))
    device = resolve_device(args.device)
    seed_everything(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    run_name = args.run_name or default_run_name()
    started = time.perf_counter()

    try:
        data_root = Path(args.data_root) if args.data_root else ensure_synthetic_market(DEFAULT_ROOT)
        train_set, query, gallery = (load_image_set(data_root, split, args.height, args.width, args.workers)
                                     for split in ("train", "query", "gallery"))
        sampler = RandomIdentitySampler(train_set.labels.tolist(), args.batch_size, args.num_instances, args.seed)
        model = ReIDNet(train_set.num_classes, backbone=args.backbone, feat_dim=args.feat_dim,
                        pretrained=args.pretrained, weights=args.weights)
        criterion = ReIDLoss(train_set.num_classes, margin=args.margin, mining=args.mining,
                             triplet_weight=args.triplet_weight, id_weight=args.id_weight,
                             label_smoothing=args.label_smoothing)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    if args.dry_run:
        query, gallery = dry_run_subsets(query, gallery)
    train_set = train_set.to(device)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    print(f"{data_root}: {len(train_set.ids)} train images of {train_set.num_classes} identities, "
          f"{len(query.ids)} queries, {len(gallery.ids)} gallery images; {args.backbone} at "
          f"{args.height}x{args.width} on {device}, {len(sampler) // args.batch_size} batches of "
          f"{args.batch_size // args.num_instances}x{args.num_instances} per epoch", flush=True)

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = min(len(sampler) // args.batch_size, DRY_RUN_BATCHES if args.dry_run else len(sampler))
    scheduler = warmup_step_schedule(optimizer, steps_per_epoch, args.warmup_epochs, milestones, args.gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not args.no_amp)
    checkpoint_path = Path(args.checkpoint_dir) / SCRIPT / f"{run_name}.pt"
    checkpoint_config = {**model.config, "height": args.height, "width": args.width}
    start_epoch = 1
    if args.resume:
        if not checkpoint_path.is_file():
            raise SystemExit(f"error: --resume: no checkpoint at {checkpoint_path}")
        try:
            state = load_checkpoint(checkpoint_path, map_location=device)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
        if state.get("config") != checkpoint_config:
            raise SystemExit(f"error: --resume: {checkpoint_path} holds {state.get('config')}, "
                             f"these flags give {checkpoint_config}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        # Continue on this run's schedule (--epochs may have grown, moving the default milestones).
        for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base_lr * scheduler.lr_lambdas[0](scheduler.last_epoch)
        start_epoch = state["epoch"] + 1
        print(f"Resumed {checkpoint_path} after epoch {state['epoch']}", flush=True)

    logger = RunLogger(args.runs_dir, SCRIPT, run_name, {
        **vars(args), "data_root": str(data_root), "device": str(device), "padding": padding,
        "milestones": " ".join(map(str, milestones)), "num_classes": train_set.num_classes})
    results = train(
        model, criterion, optimizer, scheduler, scaler, train_set, sampler, query, gallery,
        epochs=args.epochs, augmentation=ReIDAugmentation(padding=padding, erasing_probability=args.erasing),
        seed=args.seed, start_epoch=start_epoch, eval_every=args.eval_every, eval_batch_size=args.eval_batch_size,
        flip_test=not args.no_flip_test, max_batches=DRY_RUN_BATCHES if args.dry_run else None, logger=logger,
        checkpoint_path=checkpoint_path, checkpoint_config=checkpoint_config,
    )
    if results is None:  # resumed a finished run: evaluate its final weights
        results = evaluate(model, query, gallery, batch_size=args.eval_batch_size, flip=not args.no_flip_test)
    summary = {key: results[key] for key in ("rank1", "rank5", "rank10", "mAP")}
    write_json_atomic(logger.directory / "results.json", {
        **results, "checkpoint": str(checkpoint_path), "data_root": str(data_root), "epochs": args.epochs,
        "num_query": len(query.ids), "num_gallery": len(gallery.ids), "flip_test": not args.no_flip_test,
        "config": checkpoint_config})
    logger.save(test=summary, wall_time_s=time.perf_counter() - started)
    logger.close()
    print(f"rank-1 {100 * results['rank1']:.1f}%  rank-5 {100 * results['rank5']:.1f}%  "
          f"rank-10 {100 * results['rank10']:.1f}%  mAP {100 * results['mAP']:.1f}%  "
          f"({time.perf_counter() - started:.0f} s; results in {logger.directory}, checkpoint {checkpoint_path})")
    return results


if __name__ == "__main__":
    main()
