"""Sibling lab D: cross-entropy vs contrastive (vs triplet) training of the same small CNN (Fashion-MNIST variant).

The variant's network: five 3x3 convolutions with batch norm and ReLU, max-pooled twice down to one 7x7 map,
then linear 49 -> 49 -> 10. Its 10 outputs are the embedding compared across the three trainings:

- ``ce``: a classifier, cross-entropy on the outputs as logits;
- ``contrastive``: a siamese net on pairs (half same-class); the variant's convention Y = 1 for a
  *dissimilar* pair, loss ``(1 - Y) D^2 + Y max(0, m - D)^2`` with margin m = 2.5;
- ``triplet``: P x K batches, triplet loss with online mining (``utils/TripletLoss.py``; ``--triplet-mining``,
  default ``batch_all``: measured here, batch-hard on this unnormalised 10-d output collapsed to one point,
  loss stuck at the margin, 60.8 % 1-NN after 3 epochs).

Every embedding is judged the same way on the test set: 1-NN classification against the training
embeddings (accuracy, macro precision / recall / F1), recall@k for k = 1..5 (does one of the k nearest
other test items share the class), and a t-SNE picture. ``--train-fraction`` trains on a stratified share
of the training set, to compare how sample-efficient the losses are.

Data: ``data/fashion-mnist_train.csv`` (and ``_test.csv``; the variant's layout: a header, then label and
784 pixels per row) when present, else the embedded MNIST sample, named as such in every output.

Outputs in ``runs/ce_vs_contrastive/<run>/``: ``results.json``, ``tsne.png``, ``recall_at_k.png``, and one
TensorBoard run (with its ``metrics.json``) per loss in ``<run>/<loss>/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from loss import contrastive_loss  # noqa: E402
from utils.embedding import (  # noqa: E402
    compute_embeddings, dry_run_subset, fit_embedding, identity_batches, knn_predict, random_pairs, recall_at_k,
    save_figure,
)
from utils.io import write_json_atomic  # noqa: E402
from utils.mnist import MnistData, load_mnist  # noqa: E402
from utils.RandomSampler import RandomIdentitySampler  # noqa: E402
from utils.training import (  # noqa: E402
    DRY_RUN_BATCHES, RunLogger, add_training_arguments, default_run_name, minibatch_indices, parse_training_args,
    resolve_device, seed_everything, steps_per_epoch,
)
from utils.TripletLoss import TripletLoss, safe_sqrt  # noqa: E402

METHODS = ("ce", "contrastive", "triplet")
RECALL_KS = (1, 2, 3, 4, 5)
FASHION_CSV = Path("data") / "fashion-mnist_train.csv"


class SmallCNN(nn.Module):
    """``(N, 1, 28, 28) -> (N, 10)``: five 3x3 conv + BN + ReLU (pooled 28 -> 14 -> 7, last one to 1 channel),
    then linear 49 -> 49 -> 10."""

    def __init__(self):
        super().__init__()

        def conv(in_channels: int, out_channels: int) -> list[nn.Module]:
            return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
                    nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*conv(1, 32), *conv(32, 32), nn.MaxPool2d(2), *conv(32, 64), *conv(64, 64),
                                      nn.MaxPool2d(2), *conv(64, 1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(49, 49), nn.ReLU(inplace=True), nn.Linear(49, 10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def read_fashion_csv(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a Fashion-MNIST CSV (a header, then ``label, pixel1..pixel784`` per row).

    Returns images (N, 1, 28, 28) float in [0, 1] and labels (N,) int64; a bad file: one-line ``ValueError``.
    """
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable CSV ({type(error).__name__})") from None
    values = table.to_numpy()
    if values.ndim != 2 or values.shape[1] != 785 or not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{path}: expected a header and rows of label + 784 pixel values, got {values.shape[1]} "
                         "columns" if values.ndim == 2 else f"{path}: expected a table")
    images = torch.from_numpy(values[:, 1:].astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    return images, torch.from_numpy(values[:, 0].astype(np.int64))


def load_data(train_csv: Path) -> MnistData:
    """Fashion-MNIST from the CSVs when ``train_csv`` exists (test: the ``_test.csv`` beside it, else a stratified
    1/6 of the training rows), else the embedded MNIST sample."""
    if not train_csv.is_file():
        return load_mnist(quiet=True)
    images, labels = read_fashion_csv(train_csv)
    test_csv = train_csv.with_name(train_csv.name.replace("_train", "_test"))
    if test_csv != train_csv and test_csv.is_file():
        test_images, test_labels = read_fashion_csv(test_csv)
        return MnistData(images, labels, test_images, test_labels, f"Fashion-MNIST CSV {train_csv} / {test_csv}")
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=1 / 6, stratify=labels.numpy(), random_state=0)
    return MnistData(images[train], labels[train], images[test], labels[test],
                     f"Fashion-MNIST CSV {train_csv} (1/6 held out as test)")


def train_method(method: str, data: MnistData, args: argparse.Namespace, logger: RunLogger) -> SmallCNN:
    """Train a fresh ``SmallCNN`` with ``method``'s loss through the shared embedding loop."""
    torch.manual_seed(args.seed)
    model = SmallCNN().to(data.train_images.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    images, labels = data.train_images, data.train_labels
    num_batches = steps_per_epoch(len(labels), args.batch_size)
    generator = torch.Generator().manual_seed(args.seed)
    if method == "ce":
        def batches(epoch: int):
            return minibatch_indices(len(labels), args.batch_size, shuffle=True, generator=generator,
                                     device=labels.device)

        def batch_loss(index: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(model(images[index]), labels[index])
    elif method == "contrastive":
        def batches(epoch: int):
            first, second, same = random_pairs(labels.cpu(), len(labels), np.random.default_rng([args.seed, epoch]))
            for index in minibatch_indices(len(same), args.batch_size, shuffle=True, generator=generator):
                yield first[index], second[index], same[index]

        def batch_loss(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            first, second, same = (part.to(labels.device) for part in batch)
            embeddings = model(images[torch.cat([first, second])])
            distances = safe_sqrt((embeddings[: len(first)] - embeddings[len(first):]).pow(2).sum(1))
            # The variant's Y (1 = dissimilar) is 1 - same: (1 - Y) D^2 + Y max(0, m - D)^2 is the same loss.
            return contrastive_loss(distances, same, args.contrastive_margin)
    else:
        sampler = RandomIdentitySampler(labels.tolist(), args.batch_size, args.num_instances, args.seed)
        criterion = TripletLoss(margin=args.triplet_margin, mining=args.triplet_mining)

        def batches(epoch: int):
            return identity_batches(sampler, num_batches, first_pass=(epoch - 1) * num_batches)

        def batch_loss(index: torch.Tensor) -> torch.Tensor:
            index = index.to(labels.device)
            return criterion(model(images[index]), labels[index])

    fit_embedding(model, optimizer, batches, batch_loss, epochs=args.epochs, logger=logger,
                  max_batches=DRY_RUN_BATCHES if args.dry_run else None, description=method)
    return model


def evaluate_embedding(model: SmallCNN, data: MnistData) -> tuple[dict[str, float], torch.Tensor]:
    """1-NN accuracy, macro precision/recall/F1 and recall@k on the test set; also returns the test embeddings."""
    from sklearn.metrics import precision_recall_fscore_support

    train_embeddings = compute_embeddings(model, data.train_images)
    test_embeddings = compute_embeddings(model, data.test_images)
    predicted = knn_predict(train_embeddings, data.train_labels, test_embeddings, k=1).cpu().numpy()
    truth = data.test_labels.cpu().numpy()
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, average="macro", zero_division=0)
    metrics = {"accuracy_1nn": float((predicted == truth).mean()), "precision_macro": float(precision),
               "recall_macro": float(recall), "f1_macro": float(f1)}
    for k, value in recall_at_k(test_embeddings, data.test_labels, RECALL_KS).items():
        metrics[f"recall_at_{k}"] = value
    return metrics, test_embeddings


def plot_tsne(embeddings: dict[str, torch.Tensor], labels: torch.Tensor, points: int, seed: int, source: str,
              path: Path) -> None:
    """t-SNE of each method's test embeddings (the same ``points`` test items in every panel)."""
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    chosen = np.random.default_rng(seed).permutation(len(labels))[:points]
    figure, axes = plt.subplots(1, len(embeddings), figsize=(4 * len(embeddings), 4), squeeze=False)
    for axis, (method, values) in zip(axes[0], embeddings.items()):
        projected = TSNE(2, perplexity=min(30.0, (len(chosen) - 1) / 3), init="pca", random_state=seed
                         ).fit_transform(values[chosen].cpu().numpy())
        scatter = axis.scatter(projected[:, 0], projected[:, 1], c=labels[chosen].cpu().numpy(), cmap="tab10", s=5)
        axis.set(title=f"{method}: test t-SNE", xticks=[], yticks=[])
    figure.colorbar(scatter, ax=axes[0].tolist(), label="class")
    figure.suptitle(source, fontsize=8)
    save_figure(figure, path)


def plot_recall(results: dict[str, dict[str, float]], source: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.6))
    for method, metrics in results.items():
        axis.plot(RECALL_KS, [100 * metrics[f"recall_at_{k}"] for k in RECALL_KS], marker="o", label=method)
    axis.set(xlabel="k", ylabel="recall@k on the test set (%)", xticks=RECALL_KS, title=source)
    axis.title.set_fontsize(8)
    axis.legend()
    save_figure(figure, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="losses compared (default: all three)")
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="stratified share of the training set used, in (0, 1] (default 1)")
    parser.add_argument("--contrastive-margin", type=float, default=2.5, help="contrastive margin (default 2.5)")
    parser.add_argument("--triplet-margin", type=float, default=1.0, help="triplet margin (default 1.0)")
    parser.add_argument("--triplet-mining", default="batch_all", choices=["batch_all", "batch_hard", "semi_hard"],
                        help="online triplet mining (default batch_all, see above)")
    parser.add_argument("--num-instances", type=int, default=16,
                        help="K per class in triplet P x K batches (default 16: P = 8 classes)")
    parser.add_argument("--tsne-points", type=int, default=1000, help="test items in the t-SNE plots (1000)")
    parser.add_argument("--train-csv", default=str(FASHION_CSV),
                        help=f"Fashion-MNIST training CSV (default {FASHION_CSV}; embedded MNIST if absent)")
    add_training_arguments(parser, epochs=5, batch_size=128, lr=1e-3, weight_decay=1e-4)
    args = parse_training_args(parser, argv)
    if not 0 < args.train_fraction <= 1:
        raise SystemExit(f"error: --train-fraction must be in (0, 1], got {args.train_fraction}")
    if args.batch_size % args.num_instances:
        raise SystemExit(f"error: --batch-size must be a multiple of --num-instances ({args.num_instances})")
    return args


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    try:
        data = load_data(Path(args.train_csv))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    num_classes = len(torch.unique(data.train_labels))
    if "triplet" in args.methods and args.batch_size // args.num_instances > num_classes:
        raise SystemExit(f"error: --batch-size / --num-instances = {args.batch_size // args.num_instances} classes "
                         f"per triplet batch, but the data has {num_classes}")
    if args.train_fraction < 1:
        data = data.subset_train(max(10 * int(data.train_labels.max() + 1),
                                     round(args.train_fraction * len(data.train_labels))), args.seed)
    if args.dry_run:
        data = dry_run_subset(data)
        args.tsne_points = min(args.tsne_points, 60)
    data = data.to(device)
    run_name = args.run_name or default_run_name()
    run_dir = Path(args.runs_dir) / "ce_vs_contrastive" / run_name
    source = f"{data.source}, {len(data.train_labels)} training images"
    print(f"Data: {source}; device {device}; outputs in {run_dir}")

    results: dict[str, dict[str, float]] = {}
    embeddings: dict[str, torch.Tensor] = {}
    for method in args.methods:
        logger = RunLogger(args.runs_dir, "ce_vs_contrastive", f"{run_name}/{method}", vars(args))
        model = train_method(method, data, args, logger)
        results[method], embeddings[method] = evaluate_embedding(model, data)
        logger.log_step(args.epochs, {f"Test/{key}": value for key, value in results[method].items()})
        logger.save(data=data.source, results=results[method])
        logger.close()
        shown = ", ".join(f"{key} {100 * value:.2f}%" for key, value in results[method].items())
        print(f"{method}: {shown}")
    plot_tsne(embeddings, data.test_labels, args.tsne_points, args.seed, source, run_dir / "tsne.png")
    plot_recall(results, source, run_dir / "recall_at_k.png")
    write_json_atomic(run_dir / "results.json", {
        "data": data.source, "train_images": len(data.train_labels), "train_fraction": args.train_fraction,
        "methods": results, "figures": ["tsne.png", "recall_at_k.png"]})
    return results


if __name__ == "__main__":
    main()
