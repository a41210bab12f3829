"""Sibling lab E: five ways to learn a 2-D embedding of digits, from softmax to online triplet mining.

The variant's embedding net maps a 28x28 digit to 2 numbers, so that every method can be *seen*:
conv 32 5x5 - PReLU - max-pool - conv 64 5x5 - PReLU - max-pool - FC 256 - PReLU - FC 256 - PReLU - FC 2.

- ``softmax``: the baseline, a classifier (PReLU + FC 2 -> 10 on the embedding), cross-entropy;
- ``siamese``: random pairs (``PairDataset``, half same-class), contrastive loss, margin ``--margin``;
- ``triplet``: one random triplet per anchor (``TripletDataset``), triplet loss;
- ``online_contrastive``: P x K batches, every positive pair and as many of the hardest negative pairs;
- ``online_triplet``: P x K batches, triplets chosen online by ``--triplet-selector`` (all, hardest,
  random_hard, semi_hard negative).

Pictures alone flatter or hide differences, so each method also gets a number: the test accuracy of a
1-nearest-neighbour classifier on its embeddings (training embeddings as the reference).

Outputs in ``runs/embeddings_2d/<run>/``: ``scatter_<method>.png`` (train and test), ``results.json`` and
``accuracy_table.md``, and one TensorBoard run (with its ``metrics.json``) per method in ``<run>/<method>/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from loss import ContrastiveLoss, OnlineContrastiveLoss, OnlineTripletLoss  # noqa: E402
from utils.embedding import (  # noqa: E402
    TRIPLET_STRATEGIES, PairDataset, TripletDataset, compute_embeddings, dry_run_subset, fit_embedding,
    identity_batches, knn_predict, save_figure,
)
from utils.io import write_json_atomic, write_text_atomic  # noqa: E402
from utils.mnist import add_mnist_arguments, prepare_mnist_run  # noqa: E402
from utils.RandomSampler import RandomIdentitySampler  # noqa: E402
from utils.training import (  # noqa: E402
    DRY_RUN_BATCHES, RunLogger, add_training_arguments, default_run_name, minibatch_indices, parse_training_args,
    steps_per_epoch,
)
from utils.TripletLoss import triplet_loss  # noqa: E402

METHODS = ("softmax", "siamese", "triplet", "online_contrastive", "online_triplet")


class EmbeddingNet(nn.Module):
    """The variant's embedding net: ``(N, 1, 28, 28) -> (N, 2)``."""

    def __init__(self):
        super().__init__()
        self.convnet = nn.Sequential(nn.Conv2d(1, 32, 5), nn.PReLU(), nn.MaxPool2d(2),
                                     nn.Conv2d(32, 64, 5), nn.PReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(64 * 4 * 4, 256), nn.PReLU(), nn.Linear(256, 256), nn.PReLU(),
                                nn.Linear(256, 2))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convnet(images))


class SoftmaxClassifier(nn.Module):
    """The softmax baseline: ``EmbeddingNet`` then PReLU + FC 2 -> ``num_classes`` logits."""

    def __init__(self, embedding: EmbeddingNet, num_classes: int = 10):
        super().__init__()
        self.embedding = embedding
        self.classifier = nn.Sequential(nn.PReLU(), nn.Linear(2, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embedding(images))


def train_method(method: str, images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace,
                 logger: RunLogger) -> EmbeddingNet:
    """Train a fresh ``EmbeddingNet`` with ``method`` through the shared embedding loop; returns it."""
    torch.manual_seed(args.seed)
    embedding = EmbeddingNet().to(images.device)
    model: nn.Module = SoftmaxClassifier(embedding).to(images.device) if method == "softmax" else embedding
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    labelled = TensorDataset(images, labels)
    cpu_labels = labels.cpu()

    if method == "softmax":
        def batches(epoch: int):
            return minibatch_indices(len(labels), args.batch_size, shuffle=True, generator=generator,
                                     device=labels.device)

        def batch_loss(index: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(model(images[index]), labels[index])
    elif method in ("siamese", "triplet"):
        wrapped = PairDataset(labelled, cpu_labels, seed=args.seed) if method == "siamese" else \
            TripletDataset(labelled, cpu_labels, seed=args.seed)
        contrastive = ContrastiveLoss(args.margin)

        def batches(epoch: int):
            wrapped.set_epoch(epoch)
            return DataLoader(wrapped, batch_size=args.batch_size, shuffle=True, generator=generator)

        def batch_loss(batch: list[torch.Tensor]) -> torch.Tensor:
            if method == "siamese":
                first, second, same = batch
                return contrastive(embedding(first), embedding(second), same.to(images.device))
            return triplet_loss(*(embedding(part) for part in batch), margin=args.margin)
    else:
        sampler = RandomIdentitySampler(cpu_labels.tolist(), args.batch_size, args.num_instances, args.seed)
        criterion = OnlineContrastiveLoss(args.margin) if method == "online_contrastive" else \
            OnlineTripletLoss(args.margin, args.triplet_selector, args.seed)
        num_batches = steps_per_epoch(len(labels), args.batch_size)

        def batches(epoch: int):
            return identity_batches(sampler, num_batches, first_pass=(epoch - 1) * num_batches)

        def batch_loss(index: torch.Tensor) -> torch.Tensor:
            index = index.to(labels.device)
            return criterion(embedding(images[index]), labels[index])

    fit_embedding(model, optimizer, batches, batch_loss, epochs=args.epochs, logger=logger,
                  max_batches=DRY_RUN_BATCHES if args.dry_run else None, description=method)
    return embedding


def plot_scatter(method: str, panels: dict[str, tuple[torch.Tensor, torch.Tensor]], accuracy: float,
                 path: Path) -> None:
    """Train and test 2-D embeddings side by side, coloured by digit."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6), squeeze=False)
    for axis, (split, (points, labels)) in zip(axes[0], panels.items()):
        points, labels = points.cpu().numpy(), labels.cpu().numpy()
        for digit in range(10):
            chosen = labels == digit
            axis.scatter(points[chosen, 0], points[chosen, 1], s=4, alpha=0.6, color=plt.cm.tab10(digit),
                         label=str(digit))
        axis.set(title=f"{method}: {split}")
    axes[0, -1].legend(markerscale=3, fontsize=7, loc="best")
    figure.suptitle(f"{method}: test 1-NN accuracy {100 * accuracy:.1f}%")
    save_figure(figure, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="methods trained and compared (default: all five)")
    parser.add_argument("--margin", type=float, default=1.0, help="contrastive and triplet margin (default 1.0)")
    parser.add_argument("--triplet-selector", default="random_hard", choices=TRIPLET_STRATEGIES,
                        help="online triplet selection (default random_hard)")
    parser.add_argument("--num-instances", type=int, default=16,
                        help="K digits per class in P x K batches (default 16)")
    add_training_arguments(parser, epochs=5, batch_size=160, lr=1e-3, weight_decay=1e-4)
    add_mnist_arguments(parser)
    args = parse_training_args(parser, argv)
    if args.batch_size % args.num_instances or args.batch_size // args.num_instances > 10:
        raise SystemExit(f"error: --batch-size must be K x P with K = --num-instances ({args.num_instances}) and "
                         f"P <= 10 digits, got {args.batch_size}")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    device, data = prepare_mnist_run(args)
    if args.dry_run:
        data = dry_run_subset(data)
    run_name = args.run_name or default_run_name()
    run_dir = Path(args.runs_dir) / "embeddings_2d" / run_name
    accuracies: dict[str, float] = {}
    for method in args.methods:
        logger = RunLogger(args.runs_dir, "embeddings_2d", f"{run_name}/{method}", vars(args))
        embedding = train_method(method, data.train_images, data.train_labels, args, logger)
        train_points = compute_embeddings(embedding, data.train_images)
        test_points = compute_embeddings(embedding, data.test_images)
        predicted = knn_predict(train_points, data.train_labels, test_points, k=1)
        accuracies[method] = (predicted == data.test_labels).float().mean().item()
        plot_scatter(method, {"train": (train_points, data.train_labels), "test": (test_points, data.test_labels)},
                     accuracies[method], run_dir / f"scatter_{method}.png")
        logger.log_step(args.epochs, {"Accuracy/test_1nn": accuracies[method]})
        logger.save(data=data.source, results={"accuracy_test_1nn": accuracies[method]})
        logger.close()
        print(f"{method}: test 1-NN accuracy {100 * accuracies[method]:.2f}%")
    table = ["| method | test 1-NN accuracy |", "|---|---|"]
    table += [f"| {method} | {100 * value:.2f}% |" for method, value in accuracies.items()]
    write_text_atomic(run_dir / "accuracy_table.md", f"Data: {data.source}\n\n" + "\n".join(table) + "\n")
    write_json_atomic(run_dir / "results.json", {
        "data": data.source, "triplet_selector": args.triplet_selector, "accuracy_test_1nn": accuracies,
        "figures": [f"scatter_{method}.png" for method in accuracies]})
    return accuracies


if __name__ == "__main__":
    main()
