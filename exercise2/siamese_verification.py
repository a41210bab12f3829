"""Sibling lab A: siamese face verification (LFW variant) -- are these two images the same person?

One network C embeds both images of a pair (shared weights, 19 layers, input 128x128x3):

    conv 5x5 64 (pad 2) - ReLU - BN - max-pool 2      128 -> 64
    conv 5x5 128 (pad 2) - ReLU - BN - max-pool 2      64 -> 32
    conv 3x3 256 (pad 1) - ReLU - BN - max-pool 2      32 -> 16
    conv 3x3 512 (pad 1) - ReLU - BN                   16 x 16 x 512 = 131,072 values
    flatten - FC 1024 - ReLU - BN                      the embedding f

Two ways to decide "same person" from (f1, f2), both trained by default (``--losses``), each from the same
initial network C, so that one table compares them:

- ``bce``: concatenate [f1, f2] (2048) -> FC -> sigmoid = P(same), binary cross-entropy, label 1 = same;
- ``contrastive``: D = |f1 - f2|, loss ``y D^2 + (1 - y) max(0, m - D)^2`` (``--margin``, y = 1 same);
  same when D is below a threshold chosen on the training pairs.

Why the two differ on unseen people: the ``bce`` logit ``w1.f1 + w2.f2 + b`` is a *sum* of a function of each
image, with no term comparing them, so it can learn which training people tend to appear in "same" pairs but
not whether two new images match; the contrastive distance compares f1 with f2 directly.

Pairs: LFW's layout (``--lfw-root`` holding ``lfw/Name/Name_0001.jpg`` and ``pairsDevTrain.txt`` /
``pairsDevTest.txt``), or plain ``path1 path2 label`` lists (``--pairs-train``, ``--pairs-test``). Without
either, the embedded default draws pairs from the synthetic Market-1501 persons (train persons for training,
the disjoint test persons for testing) and writes them as plain lists in the run folder.

The over-fitting this predicts is measured, not asserted: ``results.json`` and ``results_table.md`` give each
head's accuracy and ROC AUC on the training pairs and on the test pairs (unseen people), and every epoch logs
the loss on the test pairs (``Loss/val``) beside the training loss.

Outputs in ``runs/siamese_verification/<run>/``: ``results.json``, ``results_table.md``, ``roc.png`` (both
heads, train and test pairs), the pair lists, and one TensorBoard run (with its ``metrics.json``) per head in
``<run>/<loss>/``; each trained model in ``<checkpoint-dir>/siamese_verification/<run>/<loss>.pt``
(``--resume`` continues an interrupted run).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from data import Market1501  # noqa: E402
from utils.embedding import (  # noqa: E402
    best_threshold, compute_embeddings, fit_embedding, random_pairs, save_figure,
)
from utils.io import write_json_atomic, write_text_atomic  # noqa: E402
from utils.siamese_losses import contrastive_loss, pair_distances  # noqa: E402
from utils.synthetic_market import DEFAULT_ROOT, ensure_synthetic_market  # noqa: E402
from utils.training import (  # noqa: E402
    DRY_RUN_BATCHES, RunLogger, add_training_arguments, default_run_name, ensure_writable_folder, minibatch_indices,
    parse_training_args, resolve_device, seed_everything,
)

Pair = tuple[str, str, int]  # (image path, image path, 1 same person / 0 not)
SCRIPT = "siamese_verification"
LOSSES = ("bce", "contrastive")
IMAGE_SIZE = 128
EMBEDDING_DIM = 1024
DRY_RUN_TEST_PAIRS = 16


# --------------------------------------------------------------------------- network C and the two heads
class NetworkC(nn.Module):
    """Network C: ``(N, 3, S, S)`` images -> ``(N, 1024)`` embeddings; S = 128 gives 131,072 FC inputs.

    ``image_size`` must be a multiple of 8 (three 2x poolings); the FC input is ``(S / 8)^2 * 512``.
    """

    def __init__(self, image_size: int = IMAGE_SIZE):
        super().__init__()
        if image_size < 8 or image_size % 8:
            raise ValueError(f"--image-size: expected a multiple of 8, got {image_size}")

        def stage(in_channels: int, out_channels: int, kernel: int, pool: bool) -> list[nn.Module]:
            layers = [nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2), nn.ReLU(inplace=True),
                      nn.BatchNorm2d(out_channels)]
            return layers + [nn.MaxPool2d(2)] if pool else layers

        self.features = nn.Sequential(*stage(3, 64, 5, True), *stage(64, 128, 5, True), *stage(128, 256, 3, True),
                                      *stage(256, 512, 3, False), nn.Flatten())
        self.fc_inputs = (image_size // 8) ** 2 * 512
        self.fc = nn.Sequential(nn.Linear(self.fc_inputs, EMBEDDING_DIM), nn.ReLU(inplace=True),
                                nn.BatchNorm1d(EMBEDDING_DIM))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(images))


class SiameseVerifier(nn.Module):
    """One shared network C, plus the ``bce`` head (FC 2048 -> 1 on ``[f1, f2]``) when ``loss == "bce"``."""

    def __init__(self, loss: str, image_size: int = IMAGE_SIZE):
        super().__init__()
        self.loss = loss
        self.embedding = NetworkC(image_size)
        self.head = nn.Linear(2 * EMBEDDING_DIM, 1) if loss == "bce" else None

    def same_score(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Higher means "same person": the logit of P(same) for ``bce``, minus the distance D for ``contrastive``."""
        if self.head is not None:
            return self.head(torch.cat([first, second], 1)).squeeze(1)
        return -pair_distances(first, second)

    def pair_loss(self, first: torch.Tensor, second: torch.Tensor, same: torch.Tensor, margin: float) -> torch.Tensor:
        if self.head is not None:
            return F.binary_cross_entropy_with_logits(self.same_score(first, second), same)
        return contrastive_loss(-self.same_score(first, second), same, margin)


# --------------------------------------------------------------------------- pair files
def _resolve(path: str, folder: Path) -> str:
    return path if os.path.isabs(path) else str(folder / path)


def parse_pair_list(path: str | Path) -> list[Pair]:
    """Read a plain pair list: one ``path1 path2 label`` per line (label 1 same, 0 not; ``#`` comments).

    Relative image paths are relative to the list's folder. A malformed line raises a one-line
    ``ValueError`` naming the file and the line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pair list not found")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 3 or fields[2] not in ("0", "1"):
            raise ValueError(f"{path}:{number}: expected 'path1 path2 label' with label 0 or 1, got {line.strip()!r}")
        pairs.append((_resolve(fields[0], path.parent), _resolve(fields[1], path.parent), int(fields[2])))
    if not pairs:
        raise ValueError(f"{path}: no pairs found")
    return pairs


def parse_lfw_pairs(path: str | Path, image_root: str | Path) -> list[Pair]:
    """Read an LFW pair file (``pairsDevTrain.txt``, ``pairsDevTest.txt`` or ``pairs.txt``).

    The first line is a header of one or two integers (pair count, or folds and count); then a same-person
    line ``Name i j`` or a different-person line ``Name1 i Name2 j``; image ``i`` of ``Name`` is
    ``image_root/Name/Name_000i.jpg``. A malformed line raises a one-line ``ValueError`` naming the file
    and line number.
    """
    path, image_root = Path(path), Path(image_root)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: LFW pair file not found")

    def image(name: str, number: str) -> str:
        return str(image_root / name / f"{name}_{int(number):04d}.jpg")

    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if number == 1 and len(fields) <= 2 and all(field.isdigit() for field in fields):
            continue
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            pairs.append((image(fields[0], fields[1]), image(fields[0], fields[2]), 1))
        elif len(fields) == 4 and fields[1].isdigit() and fields[3].isdigit():
            pairs.append((image(fields[0], fields[1]), image(fields[2], fields[3]), 0))
        else:
            raise ValueError(f"{path}:{number}: expected 'Name i j' or 'Name1 i Name2 j', got {line.strip()!r}")
    if not pairs:
        raise ValueError(f"{path}: no pairs found")
    return pairs


def write_market_pairs(market_root: Path, out_dir: Path, num_train: int, num_test: int, seed: int) -> tuple[Path, Path]:
    """The embedded default: random pairs (half same person) of synthetic Market-1501 persons, as plain lists.

    Training pairs come from the train split, test pairs from the disjoint test persons (query + gallery,
    distractors left out). Returns the paths of ``pairs_train.txt`` and ``pairs_test.txt``.
    """
    rng = np.random.default_rng(seed)
    written = []
    splits = {"train": [Market1501(market_root, "train")],
              "test": [Market1501(market_root, "query"), Market1501(market_root, "gallery")]}
    for (name, datasets), count in zip(splits.items(), (num_train, num_test)):
        paths = [path for dataset in datasets for path, pid in zip(dataset.imgs, dataset.ids) if pid > 0]
        ids = [pid for dataset in datasets for pid in dataset.ids if pid > 0]
        first, second, same = random_pairs(ids, count, rng)
        lines = [f"{os.path.relpath(paths[i], out_dir)} {os.path.relpath(paths[j], out_dir)} {int(s)}"
                 for i, j, s in zip(first.tolist(), second.tolist(), same.tolist())]
        written.append(write_text_atomic(out_dir / f"pairs_{name}.txt", "\n".join(lines) + "\n"))
    return written[0], written[1]


@dataclass
class PairImages:
    """Pairs loaded once: ``images`` uint8 (M, 3, S, S), ``index`` int64 (P, 2) into them, ``same`` float (P,)."""

    images: torch.Tensor
    index: torch.Tensor
    same: torch.Tensor


def load_pair_images(pairs: list[Pair], image_size: int) -> PairImages:
    """Load every distinct image of ``pairs`` once, resized to ``image_size`` square (a missing or unreadable
    image: one-line error naming it)."""
    from PIL import Image, UnidentifiedImageError

    index_of: dict[str, int] = {}
    for first, second, _ in pairs:
        index_of.setdefault(first, len(index_of))
        index_of.setdefault(second, len(index_of))
    images = torch.empty(len(index_of), 3, image_size, image_size, dtype=torch.uint8)
    for path, index in index_of.items():
        try:
            with Image.open(path) as file:
                image = file.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: image named in the pair list not found") from None
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{path}: not a readable image ({type(error).__name__})") from None
        images[index] = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    pair_index = torch.tensor([[index_of[first], index_of[second]] for first, second, _ in pairs])
    same = torch.tensor([float(label) for _, _, label in pairs])
    return PairImages(images, pair_index, same)


def to_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images -> float in [-1, 1] on ``device`` (converted per batch: the uint8 set is 4x smaller)."""
    return images.to(device).float().div_(127.5).sub_(1.0)


@torch.no_grad()
def pair_scores(model: SiameseVerifier, images: torch.Tensor, pair_index: torch.Tensor, device: torch.device,
                batch_size: int) -> np.ndarray:
    """"Same person" score of every pair; each image is embedded once (network C in eval mode)."""
    model.eval()
    embeddings = compute_embeddings(lambda batch: model.embedding(to_float(batch, device)), images, batch_size)
    return model.same_score(embeddings[pair_index[:, 0]], embeddings[pair_index[:, 1]]).cpu().numpy()


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """ROC curves, ``label -> (same (P,), scores (P,))``: solid for test pairs, dashed for training pairs."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    figure, axis = plt.subplots(figsize=(5, 5))
    for index, (label, (same, scores)) in enumerate(curves.items()):
        false_positive, true_positive, _ = roc_curve(same, scores)
        axis.plot(false_positive, true_positive, linestyle="--" if "train" in label else "-",
                  color=plt.cm.tab10(index // 2), label=f"{label}: AUC {roc_auc_score(same, scores):.3f}")
    axis.plot([0, 1], [0, 1], "k:", linewidth=0.8, label="chance")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="Siamese verification: ROC")
    axis.legend(loc="lower right", fontsize=8)
    save_figure(figure, path)


# --------------------------------------------------------------------------- the run
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES,
                        help="heads trained and compared: bce (FC + sigmoid on [f1, f2]), contrastive (distance + "
                             "threshold) (default both)")
    parser.add_argument("--margin", type=float, default=1.0, help="contrastive margin m (default 1.0)")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE,
                        help="square input size, a multiple of 8 (default 128: network C exactly, a GPU job; "
                             "32 keeps every layer but shrinks the FC to 8,192 inputs for a CPU run of minutes)")
    parser.add_argument("--lfw-root", default=None,
                        help="folder holding lfw/Name/Name_0001.jpg, pairsDevTrain.txt and pairsDevTest.txt")
    parser.add_argument("--pairs-train", default=None, help="plain 'path1 path2 label' list for training")
    parser.add_argument("--pairs-test", default=None, help="plain 'path1 path2 label' list for testing")
    parser.add_argument("--market-root", default=str(DEFAULT_ROOT),
                        help=f"synthetic/real Market-1501 for the embedded default (default {DEFAULT_ROOT}, "
                             "generated on first use)")
    parser.add_argument("--train-pairs", type=int, default=600, help="embedded default: training pairs (600)")
    parser.add_argument("--test-pairs", type=int, default=300, help="embedded default: test pairs (300)")
    add_training_arguments(parser, epochs=3, batch_size=16, lr=1e-4, weight_decay=0.0)
    args = parse_training_args(parser, argv)
    problems = [
        (args.image_size < 8 or args.image_size % 8, f"--image-size must be a multiple of 8, got {args.image_size}"),
        (args.margin <= 0, f"--margin must be > 0, got {args.margin}"),
        (min(args.train_pairs, args.test_pairs) < 2, "--train-pairs and --test-pairs must be >= 2 (a same and a "
                                                     "different pair)"),
        ((args.pairs_train is None) != (args.pairs_test is None), "--pairs-train and --pairs-test go together"),
        (args.lfw_root is not None and args.pairs_train is not None,
         "give either --lfw-root or --pairs-train/--pairs-test, not both"),
    ]
    for failed, message in problems:
        if failed:
            raise SystemExit(f"error: {message}")
    return args


def read_pairs(args: argparse.Namespace, run_dir: Path) -> tuple[list[Pair], list[Pair], str]:
    """Training and test pairs from the flags, and a one-line name of the data used."""
    if args.lfw_root is not None:
        root = Path(args.lfw_root)
        image_root = root / "lfw" if (root / "lfw").is_dir() else root
        return (parse_lfw_pairs(root / "pairsDevTrain.txt", image_root),
                parse_lfw_pairs(root / "pairsDevTest.txt", image_root), f"LFW from {root}")
    if args.pairs_train is not None:
        return (parse_pair_list(args.pairs_train), parse_pair_list(args.pairs_test),
                f"pair lists {args.pairs_train} / {args.pairs_test}")
    market_root = Path(args.market_root)
    if market_root == DEFAULT_ROOT:
        ensure_synthetic_market(market_root)
    train_list, test_list = write_market_pairs(market_root, run_dir, args.train_pairs, args.test_pairs, args.seed)
    return (parse_pair_list(train_list), parse_pair_list(test_list),
            f"embedded synthetic Market-1501 person pairs from {market_root}")


def train_head(loss: str, train: PairImages, test: PairImages, args: argparse.Namespace, device: torch.device,
               logger: RunLogger, checkpoint: Path) -> SiameseVerifier:
    """Train network C with the ``loss`` head on the training pairs, logging the test-pair loss per epoch."""
    torch.manual_seed(args.seed)
    model = SiameseVerifier(loss, args.image_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    print(f"Network C, {loss} head: {model.embedding.fc_inputs:,} FC inputs, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, device {device}; TensorBoard: "
          f"{logger.directory}")

    def batches(pairs: PairImages, epoch: int):
        generator = torch.Generator().manual_seed(args.seed * 100_003 + epoch)
        for batch in minibatch_indices(len(pairs.same), args.batch_size, shuffle=epoch > 0, generator=generator):
            index = pairs.index[batch]
            yield pairs.images[index.flatten()], pairs.same[batch]

    def batch_loss(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, same = batch
        embeddings = model.embedding(to_float(images, device))
        first, second = embeddings.view(len(same), 2, -1).unbind(1)
        return model.pair_loss(first, second, same.to(device), args.margin)

    fit_embedding(model, optimizer, lambda epoch: batches(train, epoch), batch_loss, epochs=args.epochs,
                  logger=logger, max_batches=DRY_RUN_BATCHES if args.dry_run else None, description=loss,
                  validation_batches=list(batches(test, 0)), checkpoint_path=checkpoint, resume=args.resume,
                  seed=args.seed, config={"loss": loss, "image_size": args.image_size})
    return model


def verification_results(model: SiameseVerifier, train: PairImages, test: PairImages, device: torch.device,
                         batch_size: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Accuracy and ROC AUC on the training and the test pairs, and the scores behind them.

    The decision threshold is the ``bce`` head's own (probability 0.5, logit 0); for ``contrastive`` it is
    the distance that classifies the *training* pairs best, then applied unchanged to the test pairs.
    """
    from sklearn.metrics import roc_auc_score

    scores = {split: pair_scores(model, pairs.images, pairs.index, device, batch_size)
              for split, pairs in (("train", train), ("test", test))}
    same = {"train": train.same.numpy(), "test": test.same.numpy()}
    threshold = 0.0 if model.loss == "bce" else best_threshold(scores["train"], same["train"])[0]
    results = {}
    for split in ("train", "test"):
        results[f"accuracy_{split}"] = float(((scores[split] >= threshold) == same[split].astype(bool)).mean())
        results[f"roc_auc_{split}"] = float(roc_auc_score(same[split], scores[split]))
    results["threshold"] = threshold if model.loss == "bce" else -threshold
    return results, scores


def report_fields(heads: dict[str, dict[str, float]], histories: dict[str, list[dict[str, float]]],
                  args: argparse.Namespace, source: str, pair_counts: tuple[int, int]) -> dict[str, str]:
    """The figures ``report/answers/lab_siamese_bce_vs_contrastive.md`` quotes, as text: ``{loss}_{result}``,
    accuracies in %, AUCs with 3 decimals (``bce_accuracy_train``, ``contrastive_roc_auc_test``), and the loss
    on the training and test pairs at the first and last epoch (``bce_loss_train_first``, ``bce_loss_test_last``)."""
    fields = {"data": source, "epochs": str(args.epochs), "image_size": str(args.image_size),
              "train_pairs": str(pair_counts[0]), "test_pairs": str(pair_counts[1])}
    for loss, results in heads.items():
        fields.update({f"{loss}_{key}": f"{100 * value:.2f}" if key.startswith("accuracy") else f"{value:.3f}"
                       for key, value in results.items()})
        for when, row in (("first", histories[loss][0]), ("last", histories[loss][-1])):
            fields[f"{loss}_loss_train_{when}"] = f"{row['Loss/train']:.3f}"
            fields[f"{loss}_loss_test_{when}"] = f"{row['Loss/val']:.3f}"
    return fields


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    run_name = args.run_name or default_run_name()
    run_dir = Path(args.runs_dir) / SCRIPT / run_name
    checkpoint_dir = ensure_writable_folder(Path(args.checkpoint_dir) / SCRIPT / run_name, "--checkpoint-dir")
    try:
        train_pairs, test_pairs, source = read_pairs(args, run_dir)
        if args.dry_run and len(test_pairs) > DRY_RUN_TEST_PAIRS:  # both ends: same and different pairs
            test_pairs = test_pairs[:DRY_RUN_TEST_PAIRS // 2] + test_pairs[-DRY_RUN_TEST_PAIRS // 2:]
        train = load_pair_images(train_pairs, args.image_size)
        test = load_pair_images(test_pairs, args.image_size)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    for name, pairs in (("training", train), ("test", test)):
        if len(torch.unique(pairs.same)) < 2:
            raise SystemExit(f"error: the {name} pairs must hold both same-person and different-person pairs")
    print(f"Data: {source}: {len(train_pairs)} training / {len(test_pairs)} test pairs, "
          f"{len(train.images) + len(test.images)} images at {args.image_size}x{args.image_size}")

    heads: dict[str, dict[str, float]] = {}
    histories: dict[str, list[dict[str, float]]] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for loss in args.losses:
        logger = RunLogger(args.runs_dir, SCRIPT, f"{run_name}/{loss}", vars(args))
        model = train_head(loss, train, test, args, device, logger, checkpoint_dir / f"{loss}.pt")
        heads[loss], scores = verification_results(model, train, test, device, args.batch_size * 4)
        histories[loss] = logger.history
        curves[f"{loss}, test pairs"] = (test.same.numpy(), scores["test"])
        curves[f"{loss}, train pairs"] = (train.same.numpy(), scores["train"])
        logger.log_step(args.epochs, {"Accuracy/test": heads[loss]["accuracy_test"],
                                      "AUC/test": heads[loss]["roc_auc_test"]})
        logger.save(data=source, results=heads[loss])
        logger.close()
    plot_roc(curves, run_dir / "roc.png")
    header = ["head", "train accuracy (%)", "test accuracy (%)", "train AUC", "test AUC"]
    rows = [[loss, f"{100 * r['accuracy_train']:.2f}", f"{100 * r['accuracy_test']:.2f}", f"{r['roc_auc_train']:.3f}",
             f"{r['roc_auc_test']:.3f}"] for loss, r in heads.items()]
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                       *("| " + " | ".join(row) + " |" for row in rows)])
    write_text_atomic(run_dir / "results_table.md", f"{source}, {args.epochs} epochs, {args.image_size}x"
                      f"{args.image_size}\n\n{table}\n")
    write_json_atomic(run_dir / "results.json", {
        "data": source, "epochs": args.epochs, "image_size": args.image_size, "train_pairs": len(train_pairs),
        "test_pairs": len(test_pairs), "heads": heads, "figures": ["roc.png"],
        "report_fields": report_fields(heads, histories, args, source, (len(train_pairs), len(test_pairs))),
        "threshold_meaning": {"bce": "logit of P(same)", "contrastive": "distance D below which a pair is 'same'"},
        "config": {key: value for key, value in vars(args).items() if isinstance(value, (int, float, str, bool))}})
    print(f"{source}, {args.epochs} epochs: verification of unseen people\n{table}\noutputs in {run_dir}")
    return heads


if __name__ == "__main__":
    main()
