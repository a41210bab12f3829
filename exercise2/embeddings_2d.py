"""Sibling lab E (siamese-triplet): five ways to learn a 2-D embedding of digits, from softmax to online mining.

The lab's embedding net maps a 28x28 digit to 2 numbers, so that every method can be *seen*:
conv 32 5x5 - PReLU - max-pool - conv 64 5x5 - PReLU - max-pool - FC 256 - PReLU - FC 256 - PReLU - FC 2.

- ``softmax``: the baseline, a classifier (PReLU + FC 2 -> 10 on the embedding), cross-entropy;
- ``siamese``: random pairs (``PairDataset``, half same-class, redrawn each epoch), contrastive loss;
- ``triplet``: one random triplet per anchor (``TripletDataset``), triplet loss;
- ``online_contrastive``: P x K batches (every digit, ``--num-instances`` images each); the pairs are chosen in
  the batch by each ``--pair-selectors`` entry (``utils/siamese_losses.py``): ``all_positive`` (every
  positive pair, as many random negative pairs) or ``hard_negative`` (every positive pair, as many of the
  closest negative pairs);
- ``online_triplet``: P x K batches, triplets chosen in the batch by each ``--triplet-selectors`` entry:
  ``all`` triplets, or per (anchor, positive) pair the ``hardest`` negative, a ``random_hard`` one (any with a
  positive loss) or a ``semi_hard`` one (farther than the positive, inside the margin).

The online methods train once per selector given (``online_triplet_semi_hard``, ...), so that one command
compares selectors. As in the lab's ``fit``, every epoch logs the training loss and the running metrics
(accumulated accuracy for ``softmax``; the average number of triplets with a non-zero loss per batch for
``online_triplet``), then the same on the test set with *fixed* test pairs, triplets and batches, drawn once
(``Loss/val``, ``Accuracy/val``, ``NonzeroTriplets/val``).

Pictures alone flatter or hide differences, so each method also gets a number: the test accuracy of a
1-nearest-neighbour classifier on its embeddings (training embeddings as the reference).

Outputs in ``runs/embeddings_2d/<run>/``: ``scatter_<method>.png`` (train and test), ``results.json`` and
``accuracy_table.md``, one TensorBoard run (with its ``metrics.json``) per method in ``<run>/<method>/``;
each trained net in ``<checkpoint-dir>/embeddings_2d/<run>/<method>.pt`` (``--resume`` continues).
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

from utils.embedding import (  # noqa: E402
    AccumulatedAccuracy, AverageNonzeroTriplets, PairDataset, TripletDataset, compute_embeddings, dry_run_subset,
    fit_embedding, identity_batches, knn_predict, save_figure,
)
from utils.io import write_json_atomic, write_text_atomic  # noqa: E402
from utils.mnist import add_mnist_arguments, prepare_mnist_run  # noqa: E402
from utils.RandomSampler import RandomIdentitySampler  # noqa: E402
from utils.siamese_losses import (  # noqa: E402
    PAIR_SELECTORS, TRIPLET_SELECTORS, ContrastiveLoss, OnlineContrastiveLoss, OnlineTripletLoss,
    make_triplet_selector,
)
from utils.training import (  # noqa: E402
    DRY_RUN_BATCHES, RunLogger, add_training_arguments, default_run_name, ensure_writable_folder, minibatch_indices,
    parse_training_args, steps_per_epoch,
)

SCRIPT = "embeddings_2d"
METHODS = ("softmax", "siamese", "triplet", "online_contrastive", "online_triplet")
FIXED_TEST_SEED = 29  # the test pairs, triplets and batches are drawn once, the same for every run
LOGGED = ("Loss", "Accuracy", "NonzeroTriplets")  # the per-epoch tags a method's results keep


class EmbeddingNet(nn.Module):
    """The lab's embedding net: ``(N, 1, 28, 28) -> (N, 2)``."""

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


def trainings(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
    """``(name, method, selector)`` of every training the flags ask for, in order."""
    runs = []
    for method in args.methods:
        selectors = {"online_contrastive": args.pair_selectors, "online_triplet": args.triplet_selectors}.get(method)
        runs += [(f"{method}_{selector}", method, selector) for selector in selectors] if selectors else \
            [(method, method, None)]
    return runs


def method_batches(method: str, images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace, seed: int):
    """``batches(epoch)`` of ``method`` over these images: ``(images, labels)`` for ``softmax`` and the online
    methods, ``(first, second, same)`` pairs for ``siamese``, ``(anchor, positive, negative)`` for ``triplet``.
    Epoch ``e`` depends only on ``(seed, e)``; epoch 0 serves as the fixed test batches."""
    cpu_labels = labels.cpu()
    if method in ("siamese", "triplet"):
        labelled = TensorDataset(images, labels)
        wrapped = PairDataset(labelled, cpu_labels, seed=seed) if method == "siamese" else \
            TripletDataset(labelled, cpu_labels, seed=seed)

        def batches(epoch: int):
            wrapped.set_epoch(epoch)
            return DataLoader(wrapped, batch_size=args.batch_size, shuffle=epoch > 0,
                              generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    elif method == "softmax":
        def batches(epoch: int):
            generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
            for index in minibatch_indices(len(labels), args.batch_size, shuffle=epoch > 0, generator=generator,
                                           device=labels.device):
                yield images[index], labels[index]
    else:
        sampler = RandomIdentitySampler(cpu_labels.tolist(), args.batch_size, args.num_instances, seed)
        num_batches = steps_per_epoch(len(labels), args.batch_size)

        def batches(epoch: int):
            for index in identity_batches(sampler, num_batches, first_pass=epoch * num_batches):
                index = index.to(labels.device)
                yield images[index], labels[index]
    return batches


def train_method(name: str, method: str, selector: str | None, data, args: argparse.Namespace, logger: RunLogger,
                 checkpoint: Path) -> EmbeddingNet:
    """Train a fresh ``EmbeddingNet`` with ``method`` (and its ``selector``), validating on the fixed test
    batches after every epoch; returns it."""
    device = data.train_images.device
    torch.manual_seed(args.seed)
    embedding = EmbeddingNet().to(device)
    model: nn.Module = SoftmaxClassifier(embedding).to(device) if method == "softmax" else embedding
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    accuracy, nonzero = AccumulatedAccuracy(), AverageNonzeroTriplets()
    if method == "siamese":
        criterion = ContrastiveLoss(args.margin)
    elif method == "triplet":
        criterion = nn.TripletMarginLoss(margin=args.margin)  # mean of max(0, |a - p| - |a - n| + margin)
    elif method == "online_contrastive":
        criterion = OnlineContrastiveLoss(args.margin, PAIR_SELECTORS[selector]())
    elif method == "online_triplet":
        criterion = OnlineTripletLoss(args.margin, make_triplet_selector(selector, args.margin))

    def batch_loss(batch: list[torch.Tensor]) -> torch.Tensor:
        if method == "softmax":
            images, labels = batch
            logits = model(images)
            accuracy.update(logits, labels)
            return F.cross_entropy(logits, labels)
        if method == "siamese":
            first, second, same = batch
            return criterion(embedding(first), embedding(second), same.to(device))
        if method == "triplet":
            return criterion(*(embedding(part) for part in batch))
        images, labels = batch
        if method == "online_contrastive":
            return criterion(embedding(images), labels)
        loss, count = criterion(embedding(images), labels)
        nonzero.update(count)
        return loss

    test_batches = list(method_batches(method, data.test_images, data.test_labels, args, FIXED_TEST_SEED)(0))
    metrics = {"softmax": [accuracy], "online_triplet": [nonzero]}.get(method, [])
    fit_embedding(model, optimizer, method_batches(method, data.train_images, data.train_labels, args, args.seed),
                  batch_loss, epochs=args.epochs, logger=logger, max_batches=DRY_RUN_BATCHES if args.dry_run else None,
                  description=name, validation_batches=test_batches, metrics=metrics, checkpoint_path=checkpoint,
                  resume=args.resume, seed=args.seed, config={"method": method, "selector": selector})
    return embedding


def plot_scatter(name: str, panels: dict[str, tuple[torch.Tensor, torch.Tensor]], accuracy: float,
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
        axis.set(title=f"{name}: {split}")
    axes[0, -1].legend(markerscale=3, fontsize=7, loc="best")
    figure.suptitle(f"{name}: test 1-NN accuracy {100 * accuracy:.1f}%")
    save_figure(figure, path)


def report_fields(results: dict[str, dict[str, float]], firsts: dict[str, dict[str, float]], source: str,
                  epochs: int) -> dict[str, str]:
    """The figures the lab's written answers quote (``report/answers/lab_embeddings_2d*.md``), as text:
    ``{name}_accuracy`` (test 1-NN, %), ``{name}_spread`` (std of the test embeddings), and each logged value
    of the last epoch, ``{name}_<tag>`` (``softmax_loss_val``), and of the first, ``{name}_<tag>_first``."""
    fields = {"data": source, "epochs": str(epochs)}
    for name, values in results.items():
        fields[f"{name}_accuracy"] = f"{100 * values['accuracy_test_1nn']:.2f}"
        fields[f"{name}_spread"] = f"{values['test_spread']:.3g}"
        for suffix, row in (("", values), ("_first", firsts[name])):
            fields.update({f"{name}_{tag.lower().replace('/', '_')}{suffix}": f"{value:.4g}"
                           for tag, value in row.items() if "/" in tag})
    return fields


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="methods trained and compared (default: all five)")
    parser.add_argument("--margin", type=float, default=1.0, help="contrastive and triplet margin (default 1.0)")
    parser.add_argument("--pair-selectors", nargs="+", default=["hard_negative"], choices=list(PAIR_SELECTORS),
                        help="online_contrastive: one training per pair selector (default hard_negative)")
    parser.add_argument("--triplet-selectors", nargs="+", default=["random_hard"], choices=list(TRIPLET_SELECTORS),
                        help="online_triplet: one training per triplet selector (default random_hard)")
    parser.add_argument("--num-instances", type=int, default=16,
                        help="K digits per class in P x K batches (default 16)")
    add_training_arguments(parser, epochs=3, batch_size=160, lr=1e-3, weight_decay=1e-4)
    add_mnist_arguments(parser)
    args = parse_training_args(parser, argv)
    problems = [
        (args.num_instances < 2 or args.batch_size % args.num_instances or args.batch_size // args.num_instances > 10,
         f"--batch-size must be K x P with K = --num-instances >= 2 ({args.num_instances}) and P <= 10 digits, "
         f"got {args.batch_size}"),
        (args.margin <= 0, f"--margin must be > 0, got {args.margin}"),
    ]
    for failed, message in problems:
        if failed:
            raise SystemExit(f"error: {message}")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    run_name = args.run_name or default_run_name()
    run_dir = Path(args.runs_dir) / SCRIPT / run_name
    checkpoint_dir = ensure_writable_folder(Path(args.checkpoint_dir) / SCRIPT / run_name, "--checkpoint-dir")
    device, data = prepare_mnist_run(args)
    if args.dry_run:
        data = dry_run_subset(data)
    results: dict[str, dict[str, float]] = {}
    firsts: dict[str, dict[str, float]] = {}
    for name, method, selector in trainings(args):
        logger = RunLogger(args.runs_dir, SCRIPT, f"{run_name}/{name}", vars(args))
        embedding = train_method(name, method, selector, data, args, logger, checkpoint_dir / f"{name}.pt")
        train_points = compute_embeddings(embedding, data.train_images)
        test_points = compute_embeddings(embedding, data.test_images)
        accuracy = (knn_predict(train_points, data.train_labels, test_points, k=1) == data.test_labels).float().mean()
        # How far apart the test embeddings lie: a collapsed embedding (all points together) shows as ~0.
        results[name] = {"accuracy_test_1nn": accuracy.item(), "test_spread": test_points.std(0).mean().item()}
        results[name].update({key: value for key, value in logger.final.items() if key.split("/")[0] in LOGGED})
        firsts[name] = {key: value for key, value in logger.history[0].items() if key.split("/")[0] in LOGGED}
        plot_scatter(name, {"train": (train_points, data.train_labels), "test": (test_points, data.test_labels)},
                     accuracy.item(), run_dir / f"scatter_{name}.png")
        logger.log_step(args.epochs, {"Accuracy/test_1nn": accuracy.item()})
        logger.save(data=data.source, results=results[name])
        logger.close()
        print(f"{name}: test 1-NN accuracy {100 * accuracy.item():.2f}%", flush=True)
    table = ["| method | test 1-NN accuracy (%) | spread of the test embeddings | last epoch: train loss | test loss |",
             "|---|---|---|---|---|"]
    table += [f"| {name} | {100 * r['accuracy_test_1nn']:.2f} | {r['test_spread']:.3g} | {r['Loss/train']:.4f} | "
              f"{r['Loss/val']:.4f} |" for name, r in results.items()]
    write_text_atomic(run_dir / "accuracy_table.md", f"Data: {data.source}, {args.epochs} epochs\n\n"
                      + "\n".join(table) + "\n")
    print("\n".join(table))
    write_json_atomic(run_dir / "results.json", {
        "data": data.source, "epochs": args.epochs, "methods": results,
        "figures": [f"scatter_{name}.png" for name in results],
        "report_fields": report_fields(results, firsts, data.source, args.epochs),
        "config": {key: value for key, value in vars(args).items() if isinstance(value, (int, float, str, bool))}})
    return {name: r["accuracy_test_1nn"] for name, r in results.items()}


if __name__ == "__main__":
    main()
