"""Exercise 2 Q6: train a person re-identification network on Market-1501, then evaluate it (CMC, mAP).

    python main.py          # CPU default: ResNet-18 at 64x32 on the synthetic Market-1501
    python main.py --data-root data/Market-1501-v15.09.15 --backbone resnet50 --pretrained --height 256 \\
        --width 128 --lr 3.5e-4 --epochs 470 --warmup-epochs 40 --milestones 160 280 --erasing 0.5 \\
        --workers 8 --eval-every 40     # the TP's configuration, on a GPU (not yet run on a GPU)

The pipeline is the TP's: ``Market1501`` (data.py) reads the images, the transforms of
``utils/reid_transforms.py`` resize and augment them (flip, pad + crop, random erasing), and a
``DataLoader`` draws P x K batches with ``RandomIdentitySampler`` (utils/RandomSampler.py), P identities
with K images each. ``train`` runs one epoch: ``ReIDNet`` (network.py) gives logits and an embedding,
``ReIDLoss`` (loss.py) adds the batch-hard triplet loss on the embedding to a label-smoothed identity
cross-entropy, Adam steps, with a linear warm-up then step decay of the learning rate (Luo et al. 2019,
"bag of tricks"), in mixed precision on CUDA. ``evaluate`` embeds query and gallery (the image plus its
mirror), L2-normalises, computes distances and calls ``utils.metrics.compute_cmc_map``.

An epoch of this sampler visits every identity once, K images each: ceil(751 / 16) = 47 batches of 64
on Market-1501, about a quarter of its 12,936 training images. The GPU command therefore counts 470
epochs = 22,090 iterations, about the 120 epochs of ~184 iterations of the bag-of-tricks recipe (Adam
3.5e-4, warm-up 10 epochs, x0.1 at 40 and 70), with its epochs scaled by four. ``--pretrained`` needs
torchvision's resnet50 file in the local torch cache (nothing is downloaded; see network.py).

Each epoch is checkpointed (atomically, with the model config ``evaluation_tp.py`` rebuilds the network
from) before it is evaluated: an evaluation error leaves the epoch saved and ``--resume`` continues the run.
Outputs: TensorBoard + metrics.json + results.json under ``runs/main/<run>/`` and the checkpoint
``checkpoints/main/<run>.pt``. Without ``--data-root`` the synthetic Market-1501 (utils/synthetic_market.py)
is generated into ``data/`` on first use.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from data import (
    Market1501,
    UnreadableImageError,
    check_evaluation_sets,
    dry_run_subsets,
    evaluation_loader,
    ids_and_cameras,
)
from loss import ReIDLoss
from network import ReIDNet
from utils import io
from utils.metrics import compute_cmc_map, euclidean_distance_matrix
from utils.RandomSampler import RandomIdentitySampler
from utils.reid_transforms import evaluation_transform, train_transform
from utils.synthetic_market import DEFAULT_ROOT, dataset_name, ensure_synthetic_market
from utils.training import (
    DRY_RUN_BATCHES,
    RunLogger,
    add_training_arguments,
    check_positive,
    claim_run_folder,
    ensure_writable_folder,
    parse_training_args,
    progress_disabled,
    resolve_device,
    seed_everything,
)

SCRIPT = "main"
MIN_IMAGE_SIDE = 16  # a ResNet divides its input by 32 before pooling: smaller images leave nothing to see


# --------------------------------------------------------------------------- training (Q6)
def train(
    model: nn.Module,
    loader: Any,
    criterion: ReIDLoss,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    *,
    scaler: torch.amp.GradScaler | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    logger: RunLogger | None = None,
    epoch: int = 1,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Train ``model`` for one epoch of ``loader``'s batches.

    Args:
        model: returns ``(cat, logits, features)`` (``ReIDNet``).
        loader: yields ``(images (B, 3, H, W) float32, labels (B,) int64)`` (a ``DataLoader`` of P x K batches).
        criterion: ``criterion(logits, features, labels) -> (total, parts)`` (``ReIDLoss``).
        optimizer: steps once per batch.
        device: where the batches are moved.
        scaler: a ``torch.amp.GradScaler`` for mixed precision (CUDA); None trains in float32.
        scheduler: stepped after every batch (the learning rate changes per iteration), or None.
        logger: receives ``Loss/<part>_step`` and ``LearningRate/step`` at every step, or None.
        epoch: 1-based epoch number (progress bar, step numbers of the logger).
        max_batches: stop after this many batches (``--dry-run``).

    Returns:
        ``{"loss", "triplet", "id"}``: the loss and its two terms averaged over the batches; ``"accuracy"``:
        the fraction of training images whose identity the logits predicted (before each step), in [0, 1].
    """
    # BEGIN SOLUTION
    device = torch.device(device)
    scaler = scaler or torch.amp.GradScaler("cuda", enabled=False)  # disabled: plain float32 steps
    num_batches = len(loader) if max_batches is None else min(len(loader), max_batches)
    model.train()
    sums = {"loss": 0.0, "triplet": 0.0, "id": 0.0}
    correct = seen = 0
    for step, (images, labels) in enumerate(tqdm(loader, total=num_batches, desc=f"epoch {epoch}", leave=False,
                                                 disable=progress_disabled())):
        if step == num_batches:
            break
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
            _, logits, features = model(images)
        loss, parts = criterion(logits.float(), features.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        learning_rate = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        for name, part in (("loss", "total"), ("triplet", "triplet"), ("id", "id")):
            sums[name] += float(parts[part])
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        if logger is not None:
            logger.log_step((epoch - 1) * num_batches + step + 1, {
                **{f"Loss/{name}_step": float(value) for name, value in parts.items()},
                "LearningRate/step": learning_rate})
    return {**{name: total / max(1, num_batches) for name, total in sums.items()}, "accuracy": correct / max(1, seen)}
    # END SOLUTION


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                    config: dict[str, Any], **extra: Any) -> Path:
    """Write a checkpoint that ``torch.load(path, weights_only=True)`` reads back, atomically.

    It holds ``model`` (the state dict), ``optimizer``, ``epoch``, ``config`` (what rebuilds the network:
    ``num_classes``, ``backbone``, ``feat_dim``, and the input ``height`` and ``width``) and every ``extra``
    entry (scheduler and scaler states, metrics...). A run killed while saving keeps its previous checkpoint.
    """
    # BEGIN SOLUTION Ex2 Q7
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
             "config": dict(config), **extra}
    return io.save_checkpoint(path, state)  # a temporary file, then os.replace onto `path`
    # END SOLUTION


# --------------------------------------------------------------------------- evaluation (given, Q6 explains it)
@torch.no_grad()
def evaluate(model: nn.Module, query_loader: DataLoader, gallery_loader: DataLoader, device: torch.device | str,
             flip: bool = True, keep_distances: bool = False) -> dict[str, Any]:
    """Market-1501 evaluation of ``model``'s embedding: ``dict(rank1, rank5, rank10, mAP, cmc)`` (fractions).

    The loaders yield ``(images, labels)`` in the order of ``loader.dataset.imgs``; person ids and cameras
    come from the file names (``data.ids_and_cameras``). ``keep_distances`` adds the (Q, G) ``"distmat"``.
    """
    device = torch.device(device)
    model.eval()  # batch norm uses its running statistics: an image's embedding ignores its batch
    embeddings = []
    for loader in (query_loader, gallery_loader):
        chunks = []
        for images, _ in loader:
            images = images.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                features = model(images)[2].float()
                if flip:  # a person keeps their identity when walking the other way: add the mirror's embedding
                    features = features + model(images.flip(3))[2].float()
            chunks.append(F.normalize(features, dim=1))  # unit length: distances then rank by cosine
        embeddings.append(torch.cat(chunks))
    distmat = euclidean_distance_matrix(embeddings[0], embeddings[1], normalize=False)  # (Q, G), in [0, 2]
    q_ids, q_cams = ids_and_cameras(query_loader.dataset)
    g_ids, g_cams = ids_and_cameras(gallery_loader.dataset)
    cmc, mean_ap = compute_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams)
    results = {"rank1": float(cmc[0]), "rank5": float(cmc[4]), "rank10": float(cmc[9]), "mAP": mean_ap,
               "cmc": cmc.tolist()}
    return {**results, "distmat": distmat} if keep_distances else results


# --------------------------------------------------------------------------- the script (given)
def warmup_step_schedule(optimizer: torch.optim.Optimizer, steps_per_epoch: int, warmup_epochs: int,
                         milestones: Sequence[int], gamma: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration learning-rate factor: linear warm-up from 0.1 over ``warmup_epochs``, then times ``gamma``
    after each milestone epoch. Warm-up keeps Adam's first, badly-scaled steps from wrecking the random
    embedding that the triplet loss starts from (and, with ImageNet weights, the pretrained features)."""
    warmup_steps = max(1, warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        epoch = step // steps_per_epoch + 1
        warm = 0.1 + 0.9 * min(1.0, step / warmup_steps) if warmup_epochs > 0 else 1.0
        return warm * gamma ** sum(epoch > milestone for milestone in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", default=None,
                      help=f"Market-1501 folder (default {DEFAULT_ROOT}, the synthetic set, generated on first use)")
    data.add_argument("--height", type=int, default=64, help="input height in pixels (default 64; TP: 256)")
    data.add_argument("--width", type=int, default=32, help="input width in pixels (default 32; TP: 128)")
    data.add_argument("--workers", type=int, default=2,
                      help="DataLoader worker processes reading images (default 2; 0 reads in the main process)")
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
    add_training_arguments(parser, epochs=60, batch_size=64, lr=2e-3, weight_decay=5e-4)
    schedule = parser.add_argument_group("batches and schedule")
    schedule.add_argument("--num-instances", type=int, default=4,
                          help="K, images per identity in a batch; P = batch-size / K (default 4)")
    schedule.add_argument("--warmup-epochs", type=int, default=2, help="linear warm-up epochs (default 2)")
    schedule.add_argument("--milestones", type=int, nargs="*", default=None,
                          help="epochs after which the lr is multiplied by --gamma "
                               "(default: 70%% and 90%% of --epochs)")
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


def check_arguments(args: argparse.Namespace) -> None:
    """One-line errors for flag values the run could only trip over later."""
    check_positive(args, "num_instances", "feat_dim", "eval_batch_size", "gamma")
    if not 0 <= args.seed < 2**32:
        raise SystemExit(f"error: --seed must be in [0, 2^32), got {args.seed}")
    if args.height < MIN_IMAGE_SIDE or args.width < MIN_IMAGE_SIDE:
        raise SystemExit(f"error: --height and --width must be >= {MIN_IMAGE_SIDE} (the ResNet divides them by 32), "
                         f"got {args.height}x{args.width}")
    if args.batch_size % args.num_instances or args.batch_size // args.num_instances < 2:
        raise SystemExit(f"error: --batch-size must be a multiple of --num-instances ({args.num_instances}) holding "
                         f"at least 2 identities (P >= 2: negatives for the triplet loss), got {args.batch_size}")
    if min(args.eval_every, args.warmup_epochs, args.workers, args.weight_decay, args.erasing) < 0 or args.erasing > 1:
        raise SystemExit("error: --eval-every, --warmup-epochs, --workers and --weight-decay must be >= 0, "
                         "--erasing in [0, 1]")
    if args.padding is not None and args.padding < 0:
        raise SystemExit(f"error: --padding must be >= 0, got {args.padding}")


def last_line(error: Exception) -> str:
    """An error's last message line (a DataLoader worker's error carries the worker's traceback before it)."""
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_training_args(build_parser(), argv)
    check_arguments(args)
    milestones = args.milestones if args.milestones is not None else [round(f * args.epochs) for f in (0.7, 0.9)]
    padding = args.padding if args.padding is not None else max(1, round(args.height / 25))
    device = resolve_device(args.device)
    seed_everything(args.seed)
    started = time.perf_counter()

    try:
        data_root = Path(args.data_root) if args.data_root else ensure_synthetic_market(DEFAULT_ROOT)
        train_set = Market1501(data_root, "train", transform=train_transform(args.height, args.width, padding,
                                                                             args.erasing))
        query_set, gallery_set = (Market1501(data_root, split, transform=evaluation_transform(args.height, args.width))
                                  for split in ("query", "gallery"))
        check_evaluation_sets(query_set, gallery_set)
        train_ids, _ = ids_and_cameras(train_set)
        sampler = RandomIdentitySampler(train_ids.tolist(), args.batch_size, args.num_instances, args.seed)
        num_classes = len(train_set.unique_ids)
        model = ReIDNet(num_classes, backbone=args.backbone, feat_dim=args.feat_dim, pretrained=args.pretrained,
                        weights=args.weights)
        criterion = ReIDLoss(num_classes, margin=args.margin, mining=args.mining, triplet_weight=args.triplet_weight,
                             id_weight=args.id_weight, label_smoothing=args.label_smoothing)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    if args.dry_run:
        query_set, gallery_set = dry_run_subsets(query_set, gallery_set)
    pin_memory = device.type == "cuda"
    # The sampler yields P x K indices in order: consecutive batch_size of them form one batch.
    train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                              pin_memory=pin_memory)
    query_loader, gallery_loader = (evaluation_loader(dataset, args.eval_batch_size, args.workers, pin_memory)
                                    for dataset in (query_set, gallery_set))
    model = model.to(device)
    steps_per_epoch = len(train_loader) if not args.dry_run else min(len(train_loader), DRY_RUN_BATCHES)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = warmup_step_schedule(optimizer, steps_per_epoch, args.warmup_epochs, milestones, args.gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not args.no_amp)
    config = {"num_classes": num_classes, "backbone": args.backbone, "feat_dim": args.feat_dim,
              "height": args.height, "width": args.width}

    # Every output folder is claimed and checked before the first step: nothing fails after an epoch's work.
    if args.resume and args.run_name and not (Path(args.checkpoint_dir) / SCRIPT / f"{args.run_name}.pt").is_file():
        raise SystemExit(f"error: --resume: no checkpoint {Path(args.checkpoint_dir) / SCRIPT / args.run_name}.pt")
    run_name, _ = claim_run_folder(args.runs_dir, SCRIPT, args.run_name, resume=args.resume)
    checkpoint_path = ensure_writable_folder(Path(args.checkpoint_dir) / SCRIPT, "--checkpoint-dir") / f"{run_name}.pt"
    start_epoch = 1
    if args.resume:
        start_epoch = resume_from(checkpoint_path, config, model, optimizer, scheduler, scaler, device) + 1
    dataset = dataset_name(data_root)
    logger = RunLogger(args.runs_dir, SCRIPT, run_name, {
        **vars(args), "data_root": str(data_root), "dataset": dataset, "device": str(device), "padding": padding,
        "milestones": " ".join(map(str, milestones)), "num_classes": num_classes, "train_images": len(train_set),
        "batches_per_epoch": steps_per_epoch})
    print(f"{data_root} ({dataset}): {len(train_set)} training images of {num_classes} identities, "
          f"{len(query_set)} queries, {len(gallery_set)} gallery images; {args.backbone} at {args.height}x{args.width} "
          f"on {device}; {steps_per_epoch} batches of {args.batch_size // args.num_instances}x{args.num_instances} "
          f"per epoch, {steps_per_epoch * args.epochs} iterations", flush=True)

    results = None
    for epoch in range(start_epoch, args.epochs + 1):
        sampler.set_epoch(epoch)
        torch.manual_seed(args.seed * 100_003 + epoch)  # augmentation of epoch e depends on (seed, e) only
        epoch_started = time.perf_counter()
        try:
            stats = train(model, train_loader, criterion, optimizer, device, scaler=scaler, scheduler=scheduler,
                          logger=logger, epoch=epoch, max_batches=steps_per_epoch)
        except UnreadableImageError as error:
            raise SystemExit(f"error: {last_line(error)}") from None
        if not math.isfinite(stats["loss"]):
            kept = f"{checkpoint_path} keeps epoch {epoch - 1}" if epoch > 1 else "no checkpoint was written"
            raise SystemExit(f"error: the training loss became {stats['loss']} in epoch {epoch} (try a lower --lr); "
                             f"{kept}")
        seconds = time.perf_counter() - epoch_started
        metrics = {"Loss/total": stats["loss"], "Loss/triplet": stats["triplet"], "Loss/id": stats["id"],
                   "Accuracy/train_id": stats["accuracy"], "LearningRate": optimizer.param_groups[0]["lr"],
                   "Time/train_epoch_s": seconds,
                   "Time/train_images_per_s": steps_per_epoch * args.batch_size / seconds}
        save_checkpoint(checkpoint_path, model, optimizer, epoch, config, scheduler=scheduler.state_dict(),
                        scaler=scaler.state_dict(), metrics=metrics)
        line = (f"epoch {epoch:3d}/{args.epochs}  loss {stats['loss']:.3f} (triplet {stats['triplet']:.3f}, "
                f"id {stats['id']:.3f})  train id acc {100 * stats['accuracy']:5.1f}%")
        results = None
        if epoch == args.epochs or (args.eval_every > 0 and epoch % args.eval_every == 0):
            results = evaluate_or_exit(model, query_loader, gallery_loader, device, not args.no_flip_test,
                                       f"after epoch {epoch} (saved in {checkpoint_path})")
            metrics.update({"Eval/rank1": results["rank1"], "Eval/rank5": results["rank5"],
                            "Eval/rank10": results["rank10"], "Eval/mAP": results["mAP"]})
            line += f"  rank-1 {100 * results['rank1']:5.1f}%  mAP {100 * results['mAP']:5.1f}%"
        logger.log_epoch(epoch, metrics)
        print(line, flush=True)
    if results is None:  # resumed a finished run: evaluate its final weights
        results = evaluate_or_exit(model, query_loader, gallery_loader, device, not args.no_flip_test,
                                   f"of {checkpoint_path}")

    io.write_json_atomic(logger.directory / "results.json", {
        **results, "checkpoint": str(checkpoint_path), "data_root": str(data_root), "dataset": dataset,
        "epochs": args.epochs, "num_query": len(query_set), "num_gallery": len(gallery_set),
        "flip_test": not args.no_flip_test, "config": config})
    logger.save(test={key: results[key] for key in ("rank1", "rank5", "rank10", "mAP")},
                wall_time_s=time.perf_counter() - started)
    logger.close()
    print(f"{dataset}: rank-1 {100 * results['rank1']:.1f}%  rank-5 {100 * results['rank5']:.1f}%  "
          f"rank-10 {100 * results['rank10']:.1f}%  mAP {100 * results['mAP']:.1f}%  "
          f"({time.perf_counter() - started:.0f} s; results in {logger.directory}, checkpoint {checkpoint_path})")
    return results


def resume_from(path: Path, config: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LambdaLR, scaler: torch.amp.GradScaler,
                device: torch.device) -> int:
    """Load the run's checkpoint into the training objects; return its epoch (one-line errors)."""
    try:
        state = io.load_checkpoint(path, map_location=device)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: --resume: {error}") from None
    if state.get("config") != config:
        raise SystemExit(f"error: --resume: {path} holds {state.get('config')}, these flags give {config}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    # Continue on this run's schedule (--epochs may have grown, moving the default milestones).
    for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base_lr * scheduler.lr_lambdas[0](scheduler.last_epoch)
    print(f"Resumed {path} after epoch {state['epoch']}", flush=True)
    return int(state["epoch"])


def evaluate_or_exit(model: nn.Module, query_loader: DataLoader, gallery_loader: DataLoader, device: torch.device,
                     flip: bool, when: str) -> dict[str, Any]:
    """``evaluate``, with its data errors (an unreadable image, no true match) as one line."""
    try:
        return evaluate(model, query_loader, gallery_loader, device, flip=flip)
    except ValueError as error:
        raise SystemExit(f"error: evaluation {when}: {last_line(error)}") from None


if __name__ == "__main__":
    main()
