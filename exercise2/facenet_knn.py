"""Sibling lab B, part 2: a FaceNet-style triplet embedding of MNIST digits, classified by nearest neighbours.

The ResNet-18 of Exercise 1 Q4 maps a digit to ``--dim`` numbers; the embedding is that output L2-normalised
and scaled by alpha = 10 (FaceNet puts embeddings on a hypersphere; the scale keeps the triplet margin and
distances in a range where gradients are not tiny). It is trained with a triplet loss, the triplets being

- ``--triplets random``: one random (anchor, positive, negative) per training image, as the lab's dataset
  draws them (three images per anchor, so an epoch costs three times the others);
- ``--triplets batch_hard``: P x K batches (``RandomIdentitySampler``), hardest positive and negative per
  anchor (Hermans et al.);
- ``--triplets semi_hard``: P x K batches, per (anchor, positive) the nearest negative still farther than
  the positive but inside the margin (FaceNet; the lab's bonus question).

``--triplet-classes 0 1 2 3 4`` draws every triplet from those digits only (the lab's Q3): the other digits
are never seen in training, yet they are still classified, which measures how the embedding generalises.

After every epoch the embedding is evaluated with a k-nearest-neighbour vote (``--k``) against the training
embeddings: on the test digits, and on the training digits themselves (5 folds: each training digit is
voted on by the other folds, so that it never counts as its own neighbour). A second classifier uses one
**centre point** per class, as the lab defines it: the training digit whose embedding is nearest to the
mean embedding of its class; a test digit takes the class of the nearest centre point.

Outputs in ``runs/facenet_knn/<run>/``: TensorBoard events and ``metrics.json`` (loss and the three
accuracies per epoch), ``results.json``, ``pics/`` (every misclassified test digit as a PNG named
``<test index>_true<t>_pred<p>.png``), ``errors.csv`` (one row per error: votes, distances), ``errors.png``
(up to ``--max-errors`` of them beside their nearest training digit of the true and of the predicted
class) and ``centres.png``. ``checkpoints/facenet_knn/<run>.pt`` after every epoch (``--resume``).

Run: ``python exercise2/facenet_knn.py --lab-subset`` (the lab's 2,000 / 1,000 digits; data flags in
``utils/lab_digits.py``).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from exercise1.q4_resnet import STEMS, build_model  # noqa: E402
from utils.augment import random_pad_crop  # noqa: E402
from utils.embedding import (  # noqa: E402
    compute_embeddings, dry_run_subset, fit_embedding, identity_batches, knn_predict, random_triplets, save_figure,
)
from utils.io import atomic_write, write_json_atomic, write_text_atomic  # noqa: E402
from utils.lab_digits import add_lab_data_arguments, prepare_lab_run  # noqa: E402
from utils.metrics import euclidean_distance_matrix  # noqa: E402
from utils.mnist import MnistData  # noqa: E402
from utils.RandomSampler import RandomIdentitySampler  # noqa: E402
from utils.run_checkpoint import checkpoint_path, keep_final_metrics, resume_epoch, save_epoch  # noqa: E402
from utils.training import (  # noqa: E402
    DRY_RUN_BATCHES, RunLogger, add_training_arguments, check_non_negative, check_positive, default_run_name,
    parse_training_args, steps_per_epoch,
)
from utils.TripletLoss import TripletLoss, triplet_loss  # noqa: E402

ALPHA = 10.0
TRIPLET_MODES = ("random", "batch_hard", "semi_hard")
PREDICTORS = ("knn", "centre")
TRAIN_FOLDS = 5
QUERY_CHUNK = 1000  # queries per distance matrix: 1,000 x 60,000 floats = 240 MB
RESUME_SETTINGS = ("triplets", "triplet_classes", "dim", "stem", "margin", "num_instances", "shift", "epochs",
                   "batch_size", "lr", "weight_decay", "seed", "lab_subset", "lab_root", "data_root")


class FaceNetEmbedding(nn.Module):
    """ResNet-18 (Exercise 1 Q4) -> ``dim`` outputs -> L2-normalised x ``alpha``: ``(N, 1, 28, 28) -> (N, dim)``."""

    def __init__(self, dim: int = 64, alpha: float = ALPHA, stem: str = "imagenet"):
        super().__init__()
        self.backbone = build_model("resnet18", stem, num_classes=dim)
        self.alpha = alpha

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.alpha * F.normalize(self.backbone(images), dim=1)


# --------------------------------------------------------------------------- classifying embeddings
def nearest_neighbour_predict(reference: torch.Tensor, reference_labels: torch.Tensor, queries: torch.Tensor,
                              k: int) -> torch.Tensor:
    """``knn_predict`` over chunks of queries, so that the distance matrix stays small: (Q,) labels."""
    chunks = [knn_predict(reference, reference_labels, queries[start: start + QUERY_CHUNK], k)
              for start in range(0, len(queries), QUERY_CHUNK)]
    return torch.cat([reference_labels[:0], *chunks])  # an empty fold of a tiny set gives no label


def stratified_folds(labels: torch.Tensor, folds: int = TRAIN_FOLDS) -> torch.Tensor:
    """Fold of each item, 0..folds-1: the items of each class go to the folds in turn, so every fold holds
    every class in proportion, whatever the order of the items (a CSV may list the digits 0, 1, ..., 9, 0, ...)."""
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    first_of_class = torch.searchsorted(sorted_labels, sorted_labels, side="left")
    fold = torch.empty_like(labels)
    fold[order] = (torch.arange(len(labels), device=labels.device) - first_of_class) % folds
    return fold


def train_knn_predict(embeddings: torch.Tensor, labels: torch.Tensor, k: int, folds: int = TRAIN_FOLDS) -> torch.Tensor:
    """kNN labels of the training digits themselves: each of ``folds`` stratified folds is voted on by the
    other folds, so a digit is never its own nearest neighbour. Returns (N,) labels."""
    predicted = torch.empty_like(labels)
    fold = stratified_folds(labels, folds)
    for index in range(folds):
        queries, reference = fold == index, fold != index
        predicted[queries] = nearest_neighbour_predict(embeddings[reference], labels[reference], embeddings[queries], k)
    return predicted


def class_centres(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per class (in increasing label order), the index of the item whose embedding is nearest to the class
    mean: the lab's "centre point", a real training digit rather than an average of digits."""
    centres = []
    for label in torch.unique(labels):
        members = torch.nonzero(labels == label).flatten()
        mean = embeddings[members].mean(0, keepdim=True)
        centres.append(members[euclidean_distance_matrix(mean, embeddings[members], normalize=False).argmin()])
    return torch.stack(centres)


def evaluate(model: nn.Module, train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor,
             test_labels: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Embeddings of both splits, the kNN and centre-point predictions, and the class centres."""
    train_embeddings = compute_embeddings(model, train_images)
    test_embeddings = compute_embeddings(model, test_images)
    centres = class_centres(train_embeddings, train_labels)
    return {"train_embeddings": train_embeddings, "test_embeddings": test_embeddings, "centres": centres,
            "knn": nearest_neighbour_predict(train_embeddings, train_labels, test_embeddings, k),
            "centre": knn_predict(train_embeddings[centres], train_labels[centres], test_embeddings, 1),
            "train_knn": train_knn_predict(train_embeddings, train_labels, k)}


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    return (predicted == labels).float().mean().item()


# --------------------------------------------------------------------------- the errors, written out
def nearest_of_class(distances: torch.Tensor, train_labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """For each row of ``distances`` (Q, R), the training index of the nearest item of ``classes[row]``."""
    other_class = train_labels.unsqueeze(0) != classes.unsqueeze(1)
    return distances.masked_fill(other_class, float("inf")).argmin(1)


def save_error_images(folder: Path, images: torch.Tensor, wrong: torch.Tensor, true: torch.Tensor,
                      predicted: torch.Tensor) -> list[str]:
    """Every misclassified test digit as a 28 x 28 PNG ``<index>_true<t>_pred<p>.png`` in ``folder`` (the
    lab's ``pics/``); earlier files of the folder are removed, so it holds exactly this run's errors."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*_true*_pred*.png"):
        old.unlink()
    names = []
    for index, t, p in zip(wrong.tolist(), true.tolist(), predicted.tolist()):
        pixels = (images[index, 0].cpu().numpy() * 255).round().astype(np.uint8)
        names.append(f"{index:05d}_true{t}_pred{p}.png")
        atomic_write(folder / names[-1], lambda handle: Image.fromarray(pixels).save(handle, format="PNG"))
    return names


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


def plot_centres(images: torch.Tensor, labels: list[int], path: Path) -> None:
    """The centre point of each class, side by side."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(images), figsize=(1.0 * len(images), 1.3), squeeze=False)
    for axis, image, label in zip(axes[0], images, labels):
        axis.imshow(image.squeeze(0).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        axis.set_title(f"class {label}", fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
    save_figure(figure, path)


def write_errors(directory: Path, data: MnistData, evaluation: dict[str, torch.Tensor], predicted: torch.Tensor,
                 k: int, max_errors: int) -> dict[str, object]:
    """``pics/``, ``errors.csv`` and ``errors.png`` for the misclassified test digits; returns their summary."""
    wrong = torch.nonzero(predicted != data.test_labels).flatten()
    true, guessed = data.test_labels[wrong], predicted[wrong]
    names = save_error_images(directory / "pics", data.test_images, wrong, true, guessed)
    distances = euclidean_distance_matrix(evaluation["test_embeddings"][wrong], evaluation["train_embeddings"],
                                          normalize=False)
    nearest_true = nearest_of_class(distances, data.train_labels, true)
    nearest_guess = nearest_of_class(distances, data.train_labels, guessed)
    votes = (data.train_labels[distances.topk(min(k, distances.shape[1]), largest=False).indices]
             == guessed.unsqueeze(1)).sum(1) if len(wrong) else torch.zeros(0)
    rows = [("test_index", "true", "predicted", f"votes_for_predicted_of_{k}", "distance_nearest_true",
             "distance_nearest_predicted", "file")]
    for row, index in enumerate(wrong.tolist()):
        rows.append((index, int(true[row]), int(guessed[row]), int(votes[row]),
                     f"{distances[row, nearest_true[row]].item():.3f}",
                     f"{distances[row, nearest_guess[row]].item():.3f}", f"pics/{names[row]}"))
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    write_text_atomic(directory / "errors.csv", text.getvalue())
    shown = torch.arange(len(wrong))
    if len(wrong) > max_errors:
        # Spread over the errors (they are ordered by test index), not only the first ones.
        shown = torch.linspace(0, len(wrong) - 1, max_errors).round().long()
    plot_errors(data.test_images[wrong[shown]], data.train_images, nearest_true[shown], nearest_guess[shown],
                true[shown].tolist(), guessed[shown].tolist(), directory / "errors.png")
    confusions = Counter(zip(true.tolist(), guessed.tolist())).most_common(5)
    return {"errors_test": len(wrong), "error_folder": "pics",
            "top_confusions": ", ".join(f"{t} read as {p} ({n})" for (t, p), n in confusions) or "none"}


# --------------------------------------------------------------------------- triplets
def triplet_batches(train_labels: torch.Tensor, mode: str, classes: list[int] | None, batch_size: int,
                    num_instances: int, seed: int, generator: torch.Generator, max_batches: int | None = None):
    """The training batches of one epoch, as indices into the training set, and their number per epoch.

    Triplets are drawn from the digits of ``classes`` only (all digits when None). Returns
    ``(batches, num_batches)``: ``batches(epoch)`` yields, for ``mode == "random"``, ``(anchors, positives,
    negatives)`` index tensors of one triplet per digit of the pool, shuffled with ``generator``; otherwise
    P x K index batches (``RandomIdentitySampler``), whose triplets the loss mines. Epoch ``e``'s batches
    depend only on ``(seed, e)`` and the state of ``generator``.
    """
    device = train_labels.device
    pool = torch.arange(len(train_labels), device=device)
    if classes is not None:
        pool = pool[torch.isin(train_labels, torch.tensor(classes, device=device))]
    pool_labels = train_labels[pool]
    num_batches = steps_per_epoch(len(pool), batch_size, max_batches)
    if mode == "random":
        def batches(epoch: int):
            anchors, positives, negatives = (pool[part.to(device)] for part in random_triplets(
                pool_labels.cpu(), np.random.default_rng([seed, epoch])))
            order = torch.randperm(len(anchors), generator=generator).to(device)
            for index in order.split(batch_size):
                yield anchors[index], positives[index], negatives[index]
    else:
        sampler = RandomIdentitySampler(pool_labels.tolist(), batch_size, num_instances, seed)

        def batches(epoch: int):
            for batch in identity_batches(sampler, num_batches, first_pass=(epoch - 1) * num_batches):
                yield pool[batch.to(device)]
    return batches, num_batches


# --------------------------------------------------------------------------- the run
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", default="batch_hard", choices=TRIPLET_MODES,
                        help="how triplets are formed (default batch_hard; see above)")
    parser.add_argument("--triplet-classes", type=int, nargs="+", default=None, metavar="DIGIT",
                        help="draw every triplet from these digits only (default: all ten)")
    parser.add_argument("--margin", type=float, default=2.0,
                        help="triplet margin in embedding units (default 2.0 = FaceNet's 0.2 times alpha)")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension (default 64)")
    parser.add_argument("--num-instances", type=int, default=8, help="K images per digit in a P x K batch (default 8)")
    parser.add_argument("--k", type=int, default=5, help="neighbours voting in the kNN classifier (default 5)")
    parser.add_argument("--predict", default="knn", choices=PREDICTORS,
                        help="classifier behind the headline accuracy and the saved errors (default knn)")
    parser.add_argument("--max-errors", type=int, default=12, help="misclassified digits in errors.png (default 12)")
    parser.add_argument("--shift", type=int, default=2,
                        help="random-shift augmentation of training digits in pixels, 0 to turn off (default 2)")
    parser.add_argument("--stem", default="imagenet", choices=STEMS, help="ResNet-18 stem (default imagenet)")
    add_training_arguments(parser, epochs=20, batch_size=64, lr=1e-3, weight_decay=5e-4)
    add_lab_data_arguments(parser)
    args = parse_training_args(parser, argv)
    check_positive(args, "dim", "k", "max_errors")
    check_non_negative(args, "shift", "margin")
    if args.triplets != "random" and args.num_instances < 2:
        raise SystemExit(f"error: --num-instances must be >= 2 (an anchor needs a positive), got {args.num_instances}")
    if args.triplets != "random" and args.batch_size % args.num_instances:
        raise SystemExit(f"error: --batch-size {args.batch_size} must be a multiple of --num-instances "
                         f"{args.num_instances}")
    if args.triplet_classes is not None:
        if any(not 0 <= digit <= 9 for digit in args.triplet_classes) or len(set(args.triplet_classes)) < 2:
            raise SystemExit(f"error: --triplet-classes expects at least two distinct digits 0-9, got "
                             f"{' '.join(map(str, args.triplet_classes))}")
        args.triplet_classes = sorted(set(args.triplet_classes))
        identities_per_batch = args.batch_size // args.num_instances
        if args.triplets != "random" and len(args.triplet_classes) < identities_per_batch:
            raise SystemExit(f"error: --triplet-classes: {len(args.triplet_classes)} digits cannot fill a batch of "
                             f"{identities_per_batch} digits (--batch-size / --num-instances); raise --num-instances")
    return args


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    device, data = prepare_lab_run(args)
    max_batches = DRY_RUN_BATCHES if args.dry_run else None
    if args.dry_run:
        data = dry_run_subset(data)
    if args.k > len(data.train_labels) * (TRAIN_FOLDS - 1) // TRAIN_FOLDS:
        raise SystemExit(f"error: --k {args.k} exceeds the training digits a fold can vote with")

    model = FaceNetEmbedding(args.dim, ALPHA, args.stem).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    generator = torch.Generator()
    batches, num_batches = triplet_batches(data.train_labels, args.triplets, args.triplet_classes,
                                           args.batch_size, args.num_instances, args.seed, generator, max_batches)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * num_batches)
    run_name = args.run_name or default_run_name()
    checkpoint = checkpoint_path(args, "facenet_knn", run_name)
    states = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    done = resume_epoch(args, checkpoint, states, RESUME_SETTINGS)
    logger = RunLogger(args.runs_dir, "facenet_knn", run_name, vars(args))
    chosen = "all digits" if args.triplet_classes is None else "digits " + " ".join(map(str, args.triplet_classes))
    print(f"FaceNet embedding: ResNet-18 -> {args.dim}-d x {ALPHA:g}, {args.triplets} triplets from {chosen}, "
          f"device {device}; TensorBoard: {logger.directory}")

    criterion = None if args.triplets == "random" else TripletLoss(margin=args.margin, mining=args.triplets)

    def augmented(images: torch.Tensor) -> torch.Tensor:
        return random_pad_crop(images, args.shift, generator) if args.shift else images

    def batch_loss(batch: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        if criterion is None:  # (anchors, positives, negatives), embedded in one forward pass
            embeddings = model(augmented(data.train_images[torch.cat(batch)]))
            return triplet_loss(*embeddings.chunk(3), margin=args.margin)
        return criterion(model(augmented(data.train_images[batch])), data.train_labels[batch])

    evaluation = None
    for epoch in range(done + 1, args.epochs + 1):
        generator.manual_seed(args.seed * 1_000_003 + epoch)  # epoch e's batches depend on (seed, e) only
        metrics = fit_embedding(model, optimizer, lambda _: batches(epoch), batch_loss, epochs=1, scheduler=scheduler,
                                max_batches=max_batches, description=f"epoch {epoch}/{args.epochs}", verbose=False)
        if not math.isfinite(metrics["Loss/train"]):
            raise SystemExit(f"error: the training loss became {metrics['Loss/train']} in epoch {epoch}: lower --lr "
                             f"(now {args.lr})")
        evaluation = evaluate(model, data.train_images, data.train_labels, data.test_images, data.test_labels, args.k)
        metrics.update({"Accuracy/train_knn": accuracy(evaluation["train_knn"], data.train_labels),
                        "Accuracy/test_knn": accuracy(evaluation["knn"], data.test_labels),
                        "Accuracy/test_centre": accuracy(evaluation["centre"], data.test_labels)})
        logger.log_epoch(epoch, metrics)
        save_epoch(checkpoint, epoch, states, {**vars(args), "triplet_classes": args.triplet_classes})
        print(f"epoch {epoch:3d}/{args.epochs}  loss {metrics['Loss/train']:.4f}  kNN (k={args.k}) train "
              f"{100 * metrics['Accuracy/train_knn']:.2f}%  test {100 * metrics['Accuracy/test_knn']:.2f}%  "
              f"centre points test {100 * metrics['Accuracy/test_centre']:.2f}%", flush=True)

    if evaluation is None:  # a resumed run that had already finished
        evaluation = evaluate(model, data.train_images, data.train_labels, data.test_images, data.test_labels, args.k)
    predicted = evaluation[args.predict]
    results: dict[str, object] = {
        "data": data.source, "triplets": args.triplets, "triplet_classes": args.triplet_classes or "all",
        "k": args.k, "predict": args.predict, "epochs": args.epochs,
        "accuracy_test": accuracy(predicted, data.test_labels),
        "accuracy_test_knn": accuracy(evaluation["knn"], data.test_labels),
        "accuracy_test_centre": accuracy(evaluation["centre"], data.test_labels),
        "accuracy_train_knn": accuracy(evaluation["train_knn"], data.train_labels),
        "test_size": len(data.test_labels), "train_size": len(data.train_labels),
    }
    if args.triplet_classes is not None:
        seen = torch.isin(data.test_labels, torch.tensor(args.triplet_classes, device=device))
        results["accuracy_test_seen_classes"] = accuracy(predicted[seen], data.test_labels[seen])
        results["accuracy_test_unseen_classes"] = accuracy(predicted[~seen], data.test_labels[~seen])
    results["test_digits_per_class"] = torch.bincount(data.test_labels, minlength=10).tolist()
    results["errors_per_class"] = torch.bincount(data.test_labels[predicted != data.test_labels], minlength=10).tolist()
    results.update(write_errors(logger.directory, data, evaluation, predicted, args.k, args.max_errors))
    centres = evaluation["centres"]
    plot_centres(data.train_images[centres], data.train_labels[centres].tolist(), logger.directory / "centres.png")
    results["figures"] = ["errors.png", "centres.png"]
    write_json_atomic(logger.directory / "results.json", results)
    keep_final_metrics(logger)
    logger.save(data=data.source)
    logger.close()
    print(f"Test accuracy ({args.triplets} triplets, {args.epochs} epochs): kNN (k={args.k}) "
          f"{100 * results['accuracy_test_knn']:.2f}%, centre points {100 * results['accuracy_test_centre']:.2f}%; "
          f"{results['errors_test']} {args.predict} errors on {len(data.test_labels):,} test digits, saved in "
          f"{logger.directory / 'pics'} ({data.source})")
    return results


if __name__ == "__main__":
    main()
