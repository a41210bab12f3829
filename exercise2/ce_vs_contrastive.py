"""Sibling lab D: does cross-entropy beat the pairwise losses? The same small CNN trained three ways.

The lab's network (``LabCNN``), input ``(N, 1, 28, 28)``, every convolution 3x3 with padding 1:

    conv 1 -> 8, ReLU, BN;  conv 8 -> 8, ReLU, BN;   max-pool 2      28 -> 14
    conv 8 -> 16, ReLU, BN; conv 16 -> 16, ReLU, BN; max-pool 2      14 -> 7
    conv 16 -> 1, ReLU; flatten                                      one 7 x 7 map = 49 values
    linear 49 -> 49, linear 49 -> 10 (no activation in between)      the 10 outputs

Its 10 outputs are the embedding compared across three trainings (``--methods``):

- ``ce``: a classifier, cross-entropy on the outputs as logits;
- ``contrastive``: a siamese net on pairs (half same-class, redrawn each epoch); the lab's convention Y = 1
  for a *dissimilar* pair, loss ``(1 - Y) D^2 + Y max(0, m - D)^2``, margin ``--contrastive-margin``;
- ``triplet``: P x K batches, triplet loss with online mining (``utils/TripletLoss.py``, ``--triplet-mining``).

Each embedding is judged the same way on the test set, by a kNN classifier (``--neighbors`` nearest training
embeddings vote): its accuracy, macro precision / recall / F1, and **recall@k**, the share of test items whose
true class is among the k classes of highest kNN probability (k = 1..5; recall@1 is the kNN accuracy). The
cross-entropy net is also scored as the classifier it was trained to be (argmax of its outputs).

A held-out validation split of the training set (``--val-size``, fixed pairs and batches) gives the
validation loss after every epoch. ``--train-fractions 0.01 0.05 0.1 0.25 0.5 1`` is the sample-efficiency
sweep: every method trained on each stratified share of the training set, at least ``--min-steps``
optimiser steps each (a 1 % share is only a few batches per epoch), then ``sample_efficiency.csv``/``.md``
and ``sample_efficiency.png`` give the kNN accuracy against the share.

Data: full MNIST by default (``--data-root``; digits, the headline); the lab's Fashion-MNIST with
``--train-csv fashion-mnist_train.csv`` (and ``--test-csv``, default its ``_test`` twin) or ``--fashion-root``
(torchvision's ``FashionMNIST/raw/``): Fashion-MNIST cannot be downloaded here, a missing file is an error.

Outputs in ``runs/ce_vs_contrastive/<run>/``: ``results.json``, ``tsne.png``, ``recall_at_k.png``,
``pairs.png`` (validation pairs and their learned distance), ``loss_curves.png`` (train and validation loss
per epoch), one TensorBoard run (with its ``metrics.json``) per training in ``<run>/<share>/<method>/``
(``100pct/ce``, ...); each trained model in ``<checkpoint-dir>/ce_vs_contrastive/<run>/<share>/<method>.pt``
(``--resume`` continues an interrupted run and skips the finished trainings).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from utils.embedding import (  # noqa: E402
    AccumulatedAccuracy, compute_embeddings, dry_run_subset, fit_embedding, identity_batches, knn_predict,
    random_pairs, recall_at_k, save_figure,
)
from utils.fashion_mnist import FASHION_CLASSES, load_fashion_csv, load_fashion_mnist  # noqa: E402
from utils.io import write_json_atomic, write_text_atomic  # noqa: E402
from utils.mnist import MnistData, add_mnist_arguments, mnist_from_args, stratified_subset  # noqa: E402
from utils.RandomSampler import RandomIdentitySampler  # noqa: E402
from utils.siamese_losses import contrastive_loss, pair_distances  # noqa: E402
from utils.training import (  # noqa: E402
    DRY_RUN_BATCHES, RunLogger, add_training_arguments, default_run_name, ensure_writable_folder, minibatch_indices,
    parse_training_args, resolve_device, seed_everything, steps_per_epoch,
)
from utils.TripletLoss import TripletLoss  # noqa: E402

SCRIPT = "ce_vs_contrastive"
METHODS = ("ce", "contrastive", "triplet")
RECALL_KS = (1, 2, 3, 4, 5)
DIGITS = tuple(str(digit) for digit in range(10))


class LabCNN(nn.Module):
    """The lab's network: ``(N, 1, 28, 28) -> (N, 10)`` (layers in the module docstring)."""

    def __init__(self):
        super().__init__()

        def conv(in_channels: int, out_channels: int) -> list[nn.Module]:
            return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True),
                    nn.BatchNorm2d(out_channels)]

        self.features = nn.Sequential(*conv(1, 8), *conv(8, 8), nn.MaxPool2d(2), *conv(8, 16), *conv(16, 16),
                                      nn.MaxPool2d(2), nn.Conv2d(16, 1, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Flatten())
        self.linear1 = nn.Linear(49, 49)
        self.linear2 = nn.Linear(49, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(self.features(images)))


# --------------------------------------------------------------------------- data
def load_data(args: argparse.Namespace) -> tuple[MnistData, tuple[str, ...]]:
    """The data the flags name and its class names; a missing or bad file ends the script in one line."""
    try:
        if args.train_csv is not None:
            return load_fashion_csv(args.train_csv, args.test_csv), FASHION_CLASSES
        if args.fashion_root is not None:
            return load_fashion_mnist(args.fashion_root), FASHION_CLASSES
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    return mnist_from_args(args), DIGITS


def split_validation(data: MnistData, size: int, seed: int) -> tuple[MnistData, MnistData]:
    """``(train, validation)``: a stratified ``size`` of the training images held out (test set untouched)."""
    held_out = torch.from_numpy(stratified_subset(data.train_labels.cpu().numpy(), size, seed))
    keep = torch.ones(len(data.train_labels), dtype=torch.bool)
    keep[held_out] = False
    train = MnistData(data.train_images[keep], data.train_labels[keep], data.test_images, data.test_labels,
                      data.source)
    validation = MnistData(data.train_images[held_out], data.train_labels[held_out], data.test_images,
                           data.test_labels, data.source)
    return train, validation


def share_name(fraction: float) -> str:
    """``0.05 -> "5pct"``, ``0.005 -> "0_5pct"``: a file- and placeholder-safe name of a training share."""
    return f"{100 * fraction:g}pct".replace(".", "_")


# --------------------------------------------------------------------------- the three trainings
def method_batches(method: str, images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace):
    """``(batches(epoch), fixed validation-style batches of the same kind)`` for ``method`` on these images.

    Batches hold tensors: ``(images, labels)`` for ``ce`` and ``triplet``, ``(first, second, dissimilar)``
    for ``contrastive``. ``batches(epoch)`` depends only on ``(--seed, epoch)``, so that a resumed training
    sees the batches an uninterrupted one would.
    """
    num_batches = steps_per_epoch(len(labels), args.batch_size)
    if method == "ce":
        def batches(epoch: int):
            generator = torch.Generator().manual_seed(args.seed * 100_003 + epoch)
            for index in minibatch_indices(len(labels), args.batch_size, shuffle=True, generator=generator,
                                           device=labels.device):
                yield images[index], labels[index]
    elif method == "contrastive":
        def batches(epoch: int):
            first, second, same = (part.to(labels.device) for part in random_pairs(
                labels.cpu(), len(labels), np.random.default_rng([args.seed, epoch])))
            generator = torch.Generator().manual_seed(args.seed * 100_003 + epoch)
            for index in minibatch_indices(len(same), args.batch_size, shuffle=True, generator=generator,
                                           device=labels.device):
                yield images[first[index]], images[second[index]], 1 - same[index]
    else:
        sampler = RandomIdentitySampler(labels.tolist(), args.batch_size, args.num_instances, args.seed)

        def batches(epoch: int):
            for index in identity_batches(sampler, num_batches, first_pass=epoch * num_batches):
                index = index.to(labels.device)
                yield images[index], labels[index]
    return batches


def train_method(method: str, train: MnistData, validation: MnistData, epochs: int, args: argparse.Namespace,
                 logger: RunLogger, checkpoint: Path) -> LabCNN:
    """Train a fresh ``LabCNN`` with ``method``'s loss, validating after every epoch; returns it."""
    torch.manual_seed(args.seed)
    model = LabCNN().to(train.train_images.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    accuracy = AccumulatedAccuracy()
    triplet = TripletLoss(margin=args.triplet_margin, mining=args.triplet_mining)

    def batch_loss(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if method == "ce":
            images, labels = batch
            logits = model(images)
            accuracy.update(logits, labels)
            return F.cross_entropy(logits, labels)
        if method == "contrastive":
            first, second, dissimilar = batch
            distances = pair_distances(model(first), model(second))
            # The lab's Y = 1 means dissimilar: (1 - Y) D^2 + Y max(0, m - D)^2 is contrastive_loss with y = 1 - Y.
            return contrastive_loss(distances, 1 - dissimilar, args.contrastive_margin)
        images, labels = batch
        return triplet(model(images), labels)

    # Fixed validation batches: epoch 0 of the validation split's own batches, drawn once.
    validation_batches = list(method_batches(method, validation.train_images, validation.train_labels, args)(0))
    fit_embedding(model, optimizer, method_batches(method, train.train_images, train.train_labels, args),
                  batch_loss, epochs=epochs, logger=logger, max_batches=DRY_RUN_BATCHES if args.dry_run else None,
                  description=logger.run_name.split("/", 1)[1], validation_batches=validation_batches,
                  metrics=[accuracy] if method == "ce" else [], checkpoint_path=checkpoint, resume=args.resume,
                  seed=args.seed, config={"method": method, "network": "LabCNN"})
    return model


def evaluate_embedding(model: LabCNN, data: MnistData, neighbors: int,
                       classifier: bool) -> tuple[dict[str, float], torch.Tensor]:
    """kNN accuracy, macro precision/recall/F1 and recall@k on the test set (training embeddings as the
    reference), and for a ``classifier`` the accuracy of its argmax; also returns the test embeddings."""
    from sklearn.metrics import precision_recall_fscore_support

    train_embeddings = compute_embeddings(model, data.train_images)
    test_embeddings = compute_embeddings(model, data.test_images)
    predicted = knn_predict(train_embeddings, data.train_labels, test_embeddings, neighbors).cpu().numpy()
    truth = data.test_labels.cpu().numpy()
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, average="macro", zero_division=0)
    metrics = {"accuracy_knn": float((predicted == truth).mean()), "precision_macro": float(precision),
               "recall_macro": float(recall), "f1_macro": float(f1)}
    if classifier:
        metrics["accuracy_argmax"] = float((test_embeddings.argmax(1).cpu().numpy() == truth).mean())
    recalls = recall_at_k(train_embeddings, data.train_labels, test_embeddings, data.test_labels, RECALL_KS, neighbors)
    metrics.update({f"recall_at_{k}": value for k, value in recalls.items()})
    return metrics, test_embeddings


# --------------------------------------------------------------------------- figures
def plot_tsne(embeddings: dict[str, torch.Tensor], labels: torch.Tensor, class_names: tuple[str, ...], points: int,
              seed: int, title: str, path: Path) -> None:
    """t-SNE of each method's test embeddings (the same ``points`` test items in every panel)."""
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    chosen = np.random.default_rng(seed).permutation(len(labels))[:points]
    chosen_labels = labels[chosen].cpu().numpy()
    figure, axes = plt.subplots(1, len(embeddings), figsize=(4.2 * len(embeddings), 4.2), squeeze=False)
    for axis, (method, values) in zip(axes[0], embeddings.items()):
        axis.set(title=f"{method}: test t-SNE", xticks=[], yticks=[])
        values = values[chosen].cpu().numpy()
        if np.ptp(values, axis=0).max() < 1e-6:  # t-SNE crashes on identical points: say what happened
            axis.text(0.5, 0.5, "all embeddings\ncollapsed to one point", ha="center", va="center")
            continue
        projected = TSNE(2, perplexity=min(30.0, (len(chosen) - 1) / 3), init="pca", random_state=seed
                         ).fit_transform(values)
        for label, name in enumerate(class_names):
            shown = chosen_labels == label
            axis.scatter(projected[shown, 0], projected[shown, 1], s=4, color=plt.cm.tab10(label), label=name)
    if axes[0, -1].has_data():
        axes[0, -1].legend(markerscale=3, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.suptitle(title, fontsize=8)
    save_figure(figure, path)


def plot_recall(results: dict[str, dict[str, float]], title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.6))
    for method, metrics in results.items():
        axis.plot(RECALL_KS, [100 * metrics[f"recall_at_{k}"] for k in RECALL_KS], marker="o", label=method)
    axis.set(xlabel="k", ylabel="kNN recall@k on the test set (%)", xticks=RECALL_KS, title=title)
    axis.title.set_fontsize(8)
    axis.legend()
    save_figure(figure, path)


def plot_pairs(validation: MnistData, count: int, seed: int, model: LabCNN | None, margin: float,
               path: Path) -> None:
    """``count`` validation pairs (half same-class), image A over image B, each with its label and, with a
    trained contrastive ``model``, the distance D it puts between them (dissimilar pairs are pushed to m)."""
    import matplotlib.pyplot as plt

    first, second, same = random_pairs(validation.train_labels.cpu(), count, np.random.default_rng(seed))
    first, second = first.to(validation.train_images.device), second.to(validation.train_images.device)
    distances = None
    if model is not None:
        distances = pair_distances(compute_embeddings(model, validation.train_images[first]),
                                   compute_embeddings(model, validation.train_images[second])).cpu()
    figure, axes = plt.subplots(2, count, figsize=(1.3 * count, 3.1), squeeze=False)
    for column in range(count):
        for row, index in enumerate((first[column], second[column])):
            axes[row, column].imshow(validation.train_images[index, 0].cpu().numpy(), cmap="gray")
            axes[row, column].set(xticks=[], yticks=[])
        caption = "same" if same[column] else "different"
        if distances is not None:
            caption += f"\nD = {distances[column]:.2f}"
        axes[1, column].set_xlabel(caption, fontsize=8)
    axes[0, 0].set_ylabel("image A", fontsize=8)
    axes[1, 0].set_ylabel("image B", fontsize=8)
    suffix = f"; D from the contrastive net (margin m = {margin:g})" if distances is not None else ""
    figure.suptitle(f"Validation pairs{suffix}", fontsize=9)
    save_figure(figure, path)


def plot_loss_curves(histories: dict[str, list[dict[str, float]]], title: str, path: Path) -> None:
    """Training and validation loss per epoch, one panel per method (their losses have different scales)."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(histories), figsize=(4.2 * len(histories), 3.4), squeeze=False,
                                layout="constrained")
    for axis, (method, history) in zip(axes[0], histories.items()):
        epochs = [row["epoch"] for row in history]
        for tag, label in (("Loss/train", "train"), ("Loss/val", "validation")):
            axis.plot(epochs, [row[tag] for row in history], marker=".", label=label)
        axis.set(title=method, xlabel="epoch", ylabel="loss")
        axis.legend()
    figure.suptitle(title, fontsize=8)
    save_figure(figure, path)


def plot_sample_efficiency(table: dict[float, dict[str, dict[str, float]]], title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.2, 3.8))
    fractions = sorted(table)
    for method in next(iter(table.values())):
        axis.plot([100 * f for f in fractions], [100 * table[f][method]["accuracy_knn"] for f in fractions],
                  marker="o", label=method)
    axis.set(xscale="log", xlabel="share of the training set (%)", ylabel="test kNN accuracy (%)", title=title)
    axis.set_xticks([100 * f for f in fractions], [f"{100 * f:g}" for f in fractions])
    axis.minorticks_off()
    axis.title.set_fontsize(8)
    axis.legend()
    save_figure(figure, path)


def sample_efficiency_table(table: dict[float, dict[str, dict[str, float]]], sizes: dict[float, int],
                            epochs: dict[float, int]) -> tuple[str, str]:
    """The sweep as CSV and Markdown: one row per share, the test kNN accuracy (%) of each method."""
    methods = list(next(iter(table.values())))
    header = ["share (%)", "training images", "epochs", *methods]
    rows = [[f"{100 * f:g}", str(sizes[f]), str(epochs[f]), *(f"{100 * table[f][m]['accuracy_knn']:.2f}"
                                                              for m in methods)] for f in sorted(table)]
    csv = "\n".join(",".join(row) for row in [header, *rows]) + "\n"
    markdown = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                          *("| " + " | ".join(row) + " |" for row in rows)]) + "\n"
    return csv, markdown


def report_fields(table: dict[float, dict[str, dict[str, float]]], sizes: dict[float, int],
                  epochs_of: dict[float, int], histories: dict[float, dict[str, list[dict[str, float]]]],
                  source: str) -> dict[str, str]:
    """The figures the lab's written answers quote (``report/answers/lab_ce_vs_contrastive*.md``), as text:
    ``{method}_{metric}`` (%) and ``{method}_val_loss_best_epoch`` at the largest share; for every share of the
    sweep ``{method}_{share}`` (kNN accuracy, %), ``{method}_{share}_val_loss_best_epoch``, ``images_{share}``
    and ``epochs_{share}``."""
    largest = max(table)
    fields = {"data": source, "train_images": f"{sizes[largest]:,}", "epochs": str(epochs_of[largest])}
    for fraction, methods in table.items():
        share = share_name(fraction)
        fields[f"images_{share}"] = f"{sizes[fraction]:,}"
        fields[f"epochs_{share}"] = str(epochs_of[fraction])
        for method, metrics in methods.items():
            fields[f"{method}_{share}"] = f"{100 * metrics['accuracy_knn']:.2f}"
            best = min(histories[fraction][method], key=lambda row: row["Loss/val"])["epoch"]
            fields[f"{method}_{share}_val_loss_best_epoch"] = str(best)
            if fraction == largest:
                fields.update({f"{method}_{key}": f"{100 * value:.2f}" for key, value in metrics.items()})
                fields[f"{method}_val_loss_best_epoch"] = str(best)
    return fields


# --------------------------------------------------------------------------- the run
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="losses compared (default: all three)")
    parser.add_argument("--train-fractions", nargs="+", type=float, default=[1.0],
                        help="stratified shares of the training set, each in (0, 1] (default 1); several give "
                             "the sample-efficiency sweep, e.g. 0.01 0.05 0.1 0.25 0.5 1")
    parser.add_argument("--min-steps", type=int, default=500,
                        help="optimiser steps each training makes at least: a small share trains more epochs "
                             "(default 500)")
    parser.add_argument("--val-size", type=int, default=2000,
                        help="training images held out for the validation loss (default 2000)")
    parser.add_argument("--contrastive-margin", type=float, default=2.5, help="contrastive margin m (default 2.5)")
    parser.add_argument("--triplet-margin", type=float, default=1.0, help="triplet margin (default 1.0)")
    parser.add_argument("--triplet-mining", default="batch_all", choices=["batch_all", "batch_hard", "semi_hard"],
                        help="online triplet mining of utils/TripletLoss.py (default batch_all)")
    parser.add_argument("--num-instances", type=int, default=16,
                        help="K per class in triplet P x K batches (default 16: P = 8 classes at batch 128)")
    parser.add_argument("--neighbors", type=int, default=5,
                        help="training embeddings voting in the kNN classifier (default 5)")
    parser.add_argument("--tsne-points", type=int, default=1000, help="test items in the t-SNE plots (default 1000)")
    parser.add_argument("--pairs-shown", type=int, default=8, help="validation pairs in pairs.png (default 8)")
    data = parser.add_argument_group("Fashion-MNIST (the lab's data; default: MNIST digits, see --data-root)")
    data.add_argument("--train-csv", default=None, help="Fashion-MNIST training CSV (label + 784 pixels per row)")
    data.add_argument("--test-csv", default=None,
                      help="Fashion-MNIST test CSV (default: the --train-csv name with 'train' -> 'test')")
    data.add_argument("--fashion-root", default=None, help="folder holding torchvision's FashionMNIST/raw/")
    add_training_arguments(parser, epochs=5, batch_size=128, lr=1e-3, weight_decay=0.0)
    add_mnist_arguments(parser)
    args = parse_training_args(parser, argv)
    problems = [
        (any(not 0 < f <= 1 for f in args.train_fractions), f"--train-fractions: each must be in (0, 1], got "
                                                             f"{args.train_fractions}"),
        (args.min_steps < 0, f"--min-steps must be >= 0, got {args.min_steps}"),
        (args.val_size < 10, f"--val-size must be >= 10 (one image per class), got {args.val_size}"),
        (min(args.contrastive_margin, args.triplet_margin) <= 0, "--contrastive-margin and --triplet-margin must "
                                                                 "be > 0"),
        (args.num_instances < 2 or args.batch_size % args.num_instances,
         f"--batch-size ({args.batch_size}) must be a multiple of --num-instances >= 2 ({args.num_instances})"),
        (args.neighbors < 1 or args.tsne_points < 2 or args.pairs_shown < 1,
         "--neighbors and --pairs-shown must be >= 1, --tsne-points >= 2"),
        (args.train_csv is not None and args.fashion_root is not None, "give --train-csv or --fashion-root, not both"),
        (args.test_csv is not None and args.train_csv is None, "--test-csv goes with --train-csv"),
    ]
    for failed, message in problems:
        if failed:
            raise SystemExit(f"error: {message}")
    return args


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    run_name = args.run_name or default_run_name()
    run_dir = Path(args.runs_dir) / SCRIPT / run_name
    checkpoint_dir = ensure_writable_folder(Path(args.checkpoint_dir) / SCRIPT / run_name, "--checkpoint-dir")
    seed_everything(args.seed)
    device = resolve_device(args.device)
    data, class_names = load_data(args)
    num_classes = len(torch.unique(data.train_labels))
    if "triplet" in args.methods and args.batch_size // args.num_instances > num_classes:
        raise SystemExit(f"error: --batch-size / --num-instances = {args.batch_size // args.num_instances} classes "
                         f"per triplet batch, but the data has {num_classes}")
    if args.dry_run:
        data = dry_run_subset(data)
        args.val_size = min(args.val_size, len(data.train_labels) // 5)
    if args.val_size > len(data.train_labels) // 2:
        raise SystemExit(f"error: --val-size {args.val_size} holds out more than half of the "
                         f"{len(data.train_labels)} training images")
    pool, validation = split_validation(data.to(device), args.val_size, args.seed)
    print(f"Data: {data.source}: {len(pool.train_labels)} training, {len(validation.train_labels)} validation, "
          f"{len(pool.test_labels)} test images; device {device}; outputs in {run_dir}")

    fractions = sorted(set(args.train_fractions))
    table: dict[float, dict[str, dict[str, float]]] = {}
    sizes: dict[float, int] = {}
    epochs_of: dict[float, int] = {}
    histories: dict[float, dict[str, list[dict[str, float]]]] = {}
    models: dict[str, LabCNN] = {}
    embeddings: dict[str, torch.Tensor] = {}
    for fraction in fractions:
        train = pool.subset_train(max(10 * num_classes, round(fraction * len(pool.train_labels))), args.seed)
        sizes[fraction] = len(train.train_labels)
        steps = steps_per_epoch(sizes[fraction], args.batch_size)
        epochs_of[fraction] = args.epochs if args.dry_run else max(args.epochs, math.ceil(args.min_steps / steps))
        table[fraction], histories[fraction] = {}, {}
        for method in args.methods:
            name = f"{share_name(fraction)}/{method}"
            logger = RunLogger(args.runs_dir, SCRIPT, f"{run_name}/{name}", vars(args))
            model = train_method(method, train, validation, epochs_of[fraction], args, logger,
                                 checkpoint_dir / f"{name}.pt")
            metrics, test_embeddings = evaluate_embedding(model, train, args.neighbors, method == "ce")
            table[fraction][method], histories[fraction][method] = metrics, logger.history
            logger.log_step(epochs_of[fraction], {f"Test/{key}": value for key, value in metrics.items()})
            logger.save(data=data.source, results=metrics)
            logger.close()
            shown = ", ".join(f"{key} {100 * value:.2f}%" for key, value in metrics.items())
            print(f"{method}, {100 * fraction:g} % of the training set ({sizes[fraction]} images, "
                  f"{epochs_of[fraction]} epochs): {shown}", flush=True)
            if fraction == fractions[-1]:
                models[method], embeddings[method] = model, test_embeddings

    largest = fractions[-1]
    results = table[largest]
    title = f"{data.source}, {sizes[largest]} training images, {epochs_of[largest]} epochs"
    figures = ["tsne.png", "recall_at_k.png", "pairs.png", "loss_curves.png"]
    plot_tsne(embeddings, pool.test_labels, class_names, min(args.tsne_points, len(pool.test_labels)), args.seed,
              title, run_dir / "tsne.png")
    plot_recall(results, title, run_dir / "recall_at_k.png")
    plot_pairs(validation, args.pairs_shown, args.seed, models.get("contrastive"), args.contrastive_margin,
               run_dir / "pairs.png")
    plot_loss_curves(histories[largest], title, run_dir / "loss_curves.png")
    fields = report_fields(table, sizes, epochs_of, histories, data.source)
    summary = {"data": data.source, "class_names": list(class_names), "validation_images": len(validation.train_labels),
               "neighbors": args.neighbors, "train_images": sizes[largest], "epochs": epochs_of[largest],
               "methods": results}
    if len(fractions) > 1:
        csv, markdown = sample_efficiency_table(table, sizes, epochs_of)
        write_text_atomic(run_dir / "sample_efficiency.csv", csv)
        write_text_atomic(run_dir / "sample_efficiency.md", f"Test kNN accuracy (%), {data.source}\n\n{markdown}")
        plot_sample_efficiency(table, f"{data.source}: sample efficiency", run_dir / "sample_efficiency.png")
        figures.append("sample_efficiency.png")
        print(f"Sample efficiency, test kNN accuracy (%):\n{markdown}", end="")
    write_json_atomic(run_dir / "results.json", {**summary, "figures": figures, "report_fields": fields,
                                                 "config": {k: v for k, v in vars(args).items() if k != "methods"}})
    return results


if __name__ == "__main__":
    main()
