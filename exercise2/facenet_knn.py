"""Sibling lab C: a FaceNet-style triplet embedding of MNIST, classified by k nearest neighbours.

The ResNet-18 of Exercise 1 Q4 maps a digit to ``--dim`` numbers; the embedding is that output L2-normalised
and scaled by alpha = 10 (FaceNet puts embeddings on a hypersphere; the scale keeps the triplet margin and
distances in a range where gradients are not tiny). It is trained with a triplet loss, the triplets being

- ``--triplets random``: one random (anchor, positive, negative) per training image, as the lab's dataset
  draws them (three images per anchor, so an epoch costs three times the others);
- ``--triplets batch_hard``: P x K batches (``RandomIdentitySampler``), hardest positive and negative per
  anchor (Hermans et al.);
- ``--triplets semi_hard``: P x K batches, per (anchor, positive) the nearest negative still farther than
  the positive but inside the margin (FaceNet; the lab's bonus question).

A digit is then classified from its embedding: majority vote of its ``--k`` nearest training embeddings,
or (``--predict centroid``) the class whose mean training embedding is nearest. Both test accuracies are
saved; ``errors.png`` shows each misclassified test digit beside its nearest training image of the true
class and of the predicted class.

Outputs in ``runs/facenet_knn/<run>/``: TensorBoard events, ``metrics.json``, ``results.json``, ``errors.png``.
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

from exercise1.q4_resnet import STEMS, build_model  # noqa: E402
from utils.embedding import (  # noqa: E402
    centroid_predict, compute_embeddings, dry_run_subset, fit_embedding, identity_batches, knn_predict,
    random_triplets, save_figure,
)
from utils.io import write_json_atomic  # noqa: E402
from utils.metrics import euclidean_distance_matrix  # noqa: E402
from utils.mnist import add_mnist_arguments, prepare_mnist_run  # noqa: E402
from utils.RandomSampler import RandomIdentitySampler  # noqa: E402
from utils.training import (  # noqa: E402
    DRY_RUN_BATCHES, RunLogger, add_training_arguments, default_run_name, minibatch_indices, parse_training_args,
    steps_per_epoch,
)
from utils.TripletLoss import TripletLoss, triplet_loss  # noqa: E402

ALPHA = 10.0
TRIPLET_MODES = ("random", "batch_hard", "semi_hard")


class FaceNetEmbedding(nn.Module):
    """ResNet-18 (Exercise 1 Q4) -> ``dim`` outputs -> L2-normalised x ``alpha``: ``(N, 1, 28, 28) -> (N, dim)``."""

    def __init__(self, dim: int = 64, alpha: float = ALPHA, stem: str = "imagenet"):
        super().__init__()
        self.backbone = build_model("resnet18", stem, num_classes=dim)
        self.alpha = alpha

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.alpha * F.normalize(self.backbone(images), dim=1)


def plot_errors(test_images: torch.Tensor, train_images: torch.Tensor, nearest_true: torch.Tensor,
                nearest_predicted: torch.Tensor, true_labels: list[int], predicted: list[int], path: Path) -> None:
    """One row per misclassified digit: the test image, its nearest training image of the true class, and of
    the predicted class (all arguments already restricted to the errors shown)."""
    import matplotlib.pyplot as plt

    rows = max(len(test_images), 1)
    figure, axes = plt.subplots(rows, 3, figsize=(4.8, 1.45 * rows), squeeze=False)
    for column, title in enumerate(("test digit", "nearest, true class", "nearest, predicted")):
        axes[0, column].set_title(title, fontsize=8)
    for row in range(len(test_images)):
        shown = (test_images[row], train_images[nearest_true[row]], train_images[nearest_predicted[row]])
        captions = (f"true {true_labels[row]}, predicted {predicted[row]}", f"class {true_labels[row]}",
                    f"class {predicted[row]}")
        for column, (image, caption) in enumerate(zip(shown, captions)):
            axes[row, column].imshow(image.squeeze(0).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row, column].set_xlabel(caption, fontsize=7)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    if len(test_images) == 0:
        axes[0, 1].text(0.5, 0.5, "no misclassified test digit", ha="center", va="center")
    save_figure(figure, path)


def nearest_of_class(distances: torch.Tensor, train_labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """For each row of ``distances`` (Q, R), the training index of the nearest item of ``classes[row]``."""
    other_class = train_labels.unsqueeze(0) != classes.unsqueeze(1)
    return distances.masked_fill(other_class, float("inf")).argmin(1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", default="batch_hard", choices=TRIPLET_MODES,
                        help="how triplets are formed (default batch_hard; see above)")
    parser.add_argument("--margin", type=float, default=2.0,
                        help="triplet margin in embedding units (default 2.0 = FaceNet's 0.2 times alpha)")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension (default 64)")
    parser.add_argument("--num-instances", type=int, default=8, help="K images per digit in a P x K batch (default 8)")
    parser.add_argument("--k", type=int, default=5, help="neighbours voting in the kNN classifier (default 5)")
    parser.add_argument("--predict", default="knn", choices=["knn", "centroid"],
                        help="classifier behind the headline accuracy and errors.png (default knn)")
    parser.add_argument("--max-errors", type=int, default=12, help="misclassified digits shown (default 12)")
    parser.add_argument("--stem", default="imagenet", choices=STEMS, help="ResNet-18 stem (default imagenet)")
    add_training_arguments(parser, epochs=3, batch_size=64, lr=1e-3, weight_decay=5e-4)
    add_mnist_arguments(parser)
    args = parse_training_args(parser, argv)
    if args.batch_size % args.num_instances:
        raise SystemExit(f"error: --batch-size {args.batch_size} must be a multiple of --num-instances "
                         f"{args.num_instances}")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    device, data = prepare_mnist_run(args)
    max_batches = DRY_RUN_BATCHES if args.dry_run else None
    if args.dry_run:
        data = dry_run_subset(data)
    model = FaceNetEmbedding(args.dim, ALPHA, args.stem).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    run_name = args.run_name or default_run_name()
    logger = RunLogger(args.runs_dir, "facenet_knn", run_name, vars(args))
    print(f"FaceNet embedding: ResNet-18 -> {args.dim}-d x {ALPHA:g}, triplets {args.triplets}, device {device}; "
          f"TensorBoard: {logger.directory}")

    num_batches = steps_per_epoch(len(data.train_labels), args.batch_size)
    if args.triplets == "random":
        generator = torch.Generator().manual_seed(args.seed)

        def batches(epoch: int):
            anchors, positives, negatives = (part.to(device) for part in random_triplets(
                data.train_labels.cpu(), np.random.default_rng([args.seed, epoch])))
            for index in minibatch_indices(len(anchors), args.batch_size, shuffle=True, generator=generator,
                                           device=device):
                yield anchors[index], positives[index], negatives[index]

        def batch_loss(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            embeddings = model(data.train_images[torch.cat(batch)])
            return triplet_loss(*embeddings.chunk(3), margin=args.margin)
    else:
        sampler = RandomIdentitySampler(data.train_labels.tolist(), args.batch_size, args.num_instances, args.seed)
        criterion = TripletLoss(margin=args.margin, mining=args.triplets)

        def batches(epoch: int):
            return identity_batches(sampler, num_batches, first_pass=(epoch - 1) * num_batches)

        def batch_loss(batch: torch.Tensor) -> torch.Tensor:
            batch = batch.to(device)
            return criterion(model(data.train_images[batch]), data.train_labels[batch])

    fit_embedding(model, optimizer, batches, batch_loss, epochs=args.epochs, logger=logger, max_batches=max_batches,
                  description=args.triplets)

    train_embeddings = compute_embeddings(model, data.train_images)
    test_embeddings = compute_embeddings(model, data.test_images)
    knn = knn_predict(train_embeddings, data.train_labels, test_embeddings, args.k)
    centroid = centroid_predict(train_embeddings, data.train_labels, test_embeddings)
    results = {
        "data": data.source,
        "triplets": args.triplets,
        "k": args.k,
        "accuracy_test_knn": (knn == data.test_labels).float().mean().item(),
        "accuracy_test_centroid": (centroid == data.test_labels).float().mean().item(),
        "predict": args.predict,
        "figures": ["errors.png"],
    }
    predicted = knn if args.predict == "knn" else centroid
    results["accuracy_test"] = results[f"accuracy_test_{args.predict}"]
    wrong = torch.nonzero(predicted != data.test_labels).flatten()
    results["errors_test"] = len(wrong)
    shown = wrong
    if len(wrong) > args.max_errors:
        # Spread over the errors (they are ordered by digit), so that the figure is not all zeros and ones.
        shown = wrong[torch.linspace(0, len(wrong) - 1, args.max_errors).round().long()]
    distances = euclidean_distance_matrix(test_embeddings[shown], train_embeddings, normalize=False)
    plot_errors(data.test_images[shown], data.train_images,
                nearest_of_class(distances, data.train_labels, data.test_labels[shown]),
                nearest_of_class(distances, data.train_labels, predicted[shown]),
                data.test_labels[shown].tolist(), predicted[shown].tolist(), logger.directory / "errors.png")
    logger.log_step(args.epochs, {"Accuracy/test_knn": results["accuracy_test_knn"],
                                  "Accuracy/test_centroid": results["accuracy_test_centroid"]})
    write_json_atomic(logger.directory / "results.json", results)
    logger.save(results=results)
    logger.close()
    print(f"Test accuracy ({args.triplets} triplets): kNN (k={args.k}) {100 * results['accuracy_test_knn']:.2f}%, "
          f"centroid {100 * results['accuracy_test_centroid']:.2f}% ({data.source})")
    return results


if __name__ == "__main__":
    main()
