"""Sibling lab A: siamese face verification (LFW variant) -- are these two images the same person?

One network C embeds both images of a pair (shared weights, 19 layers, input 128x128x3):

    conv 5x5 64 (pad 2) - ReLU - BN - max-pool 2      128 -> 64
    conv 5x5 128 (pad 2) - ReLU - BN - max-pool 2      64 -> 32
    conv 3x3 256 (pad 1) - ReLU - BN - max-pool 2      32 -> 16
    conv 3x3 512 (pad 1) - ReLU - BN                   16 x 16 x 512 = 131,072 values
    flatten - FC 1024 - ReLU - BN                      the embedding f

Two ways to decide "same person" from (f1, f2):

- ``--loss bce``: concatenate [f1, f2] (2048) -> FC -> sigmoid = P(same), binary cross-entropy, label 1 = same;
- ``--loss contrastive``: D = |f1 - f2|, loss ``y D^2 + (1 - y) max(0, m - D)^2`` (``--margin``, y = 1 same);
  same when D is below a threshold chosen on the training pairs.

Why the two differ on unseen people: the ``bce`` logit ``w1.f1 + w2.f2 + b`` is a *sum* of a function of each
image, with no term comparing them, so it can learn which training people tend to appear in "same" pairs but
not whether two new images match; the contrastive distance compares f1 with f2 directly.

Pairs: LFW's layout (``--lfw-root`` holding ``lfw/Name/Name_0001.jpg`` and ``pairsDevTrain.txt`` /
``pairsDevTest.txt``), or plain ``path1 path2 label`` lists (``--pairs-train``, ``--pairs-test``). Without
either, the embedded default draws pairs from the synthetic Market-1501 persons (train persons for training,
the disjoint test persons for testing) and writes them as plain lists in the run folder.

Outputs in ``runs/siamese_verification/<run>/``: TensorBoard events, ``metrics.json``, ``results.json``
(test accuracy, ROC AUC) and ``roc.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from data import Market1501  # noqa: E402
from loss import contrastive_loss  # noqa: E402
from utils.embedding import best_threshold, compute_embeddings, fit_embedding, random_pairs, save_figure  # noqa: E402
from utils.io import write_json_atomic, write_text_atomic  # noqa: E402
from utils.synthetic_market import DEFAULT_ROOT, ensure_synthetic_market  # noqa: E402
from utils.training import (  # noqa: E402
    DRY_RUN_BATCHES, RunLogger, add_training_arguments, default_run_name, minibatch_indices, parse_training_args,
    resolve_device, seed_everything,
)
from utils.TripletLoss import safe_sqrt  # noqa: E402

Pair = tuple[str, str, int]  # (image path, image path, 1 same person / 0 not)
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
        return -safe_sqrt((first - second).pow(2).sum(1))

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


def load_pair_images(pairs: list[Pair], image_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Load every distinct image of ``pairs`` once, resized to ``image_size`` square.

    Returns ``(images uint8 (M, 3, S, S), pair_index int64 (P, 2) into images, same float (P,))``.
    """
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
    return images, pair_index, same


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


def plot_roc(same: np.ndarray, scores: np.ndarray, auc: float, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    false_positive, true_positive, _ = roc_curve(same, scores)
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot(false_positive, true_positive, label=f"AUC = {auc:.3f}")
    axis.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="chance")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    axis.legend(loc="lower right")
    save_figure(figure, path)


# --------------------------------------------------------------------------- the run
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", default="contrastive", choices=["bce", "contrastive"],
                        help="bce: FC + sigmoid on [f1, f2]; contrastive: distance + threshold (default contrastive)")
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
    if (args.pairs_train is None) != (args.pairs_test is None):
        raise SystemExit("error: --pairs-train and --pairs-test go together")
    if args.lfw_root is not None and args.pairs_train is not None:
        raise SystemExit("error: give either --lfw-root or --pairs-train/--pairs-test, not both")
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


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    run_name = args.run_name or default_run_name()
    logger = RunLogger(args.runs_dir, "siamese_verification", run_name, vars(args))
    try:
        train_pairs, test_pairs, source = read_pairs(args, logger.directory)
        if args.dry_run:
            test_pairs = test_pairs[:DRY_RUN_TEST_PAIRS // 2] + test_pairs[-DRY_RUN_TEST_PAIRS // 2:]
        train_images, train_index, train_same = load_pair_images(train_pairs, args.image_size)
        test_images, test_index, test_same = load_pair_images(test_pairs, args.image_size)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"Data: {source}: {len(train_pairs)} training / {len(test_pairs)} test pairs, "
          f"{len(train_images) + len(test_images)} images at {args.image_size}x{args.image_size}")

    model = SiameseVerifier(args.loss, args.image_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    print(f"Network C: {model.embedding.fc_inputs:,} FC inputs, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, loss {args.loss}, device {device}; TensorBoard: {logger.directory}")
    generator = torch.Generator().manual_seed(args.seed)

    def batch_loss(batch: torch.Tensor) -> torch.Tensor:
        pairs = train_index[batch]
        embeddings = model.embedding(to_float(train_images[pairs.flatten()], device))
        first, second = embeddings.view(len(batch), 2, -1).unbind(1)
        return model.pair_loss(first, second, train_same[batch].to(device), args.margin)

    fit_embedding(
        model, optimizer, lambda epoch: minibatch_indices(len(train_same), args.batch_size, shuffle=True,
                                                          generator=generator),
        batch_loss, epochs=args.epochs, logger=logger, max_batches=DRY_RUN_BATCHES if args.dry_run else None,
        description=args.loss,
    )

    from sklearn.metrics import roc_auc_score

    train_scores = pair_scores(model, train_images, train_index, device, args.batch_size * 4)
    test_scores = pair_scores(model, test_images, test_index, device, args.batch_size * 4)
    if args.loss == "bce":
        threshold = 0.0  # logit 0 = probability 0.5
    else:
        threshold, _ = best_threshold(train_scores, train_same.numpy())
    results = {
        "data": source,
        "loss": args.loss,
        "accuracy_train": float(((train_scores >= threshold) == train_same.numpy().astype(bool)).mean()),
        "accuracy_test": float(((test_scores >= threshold) == test_same.numpy().astype(bool)).mean()),
        "roc_auc_test": float(roc_auc_score(test_same.numpy(), test_scores)),
        "threshold": threshold if args.loss == "bce" else -threshold,
        "threshold_meaning": "logit of P(same)" if args.loss == "bce" else "distance D below which a pair is 'same'",
        "train_pairs": len(train_pairs),
        "test_pairs": len(test_pairs),
        "figures": ["roc.png"],
    }
    plot_roc(test_same.numpy(), test_scores, results["roc_auc_test"],
             f"siamese {args.loss}: test ROC", logger.directory / "roc.png")
    logger.log_step(args.epochs, {"Accuracy/test": results["accuracy_test"], "AUC/test": results["roc_auc_test"]})
    write_json_atomic(logger.directory / "results.json", results)
    logger.save(results=results)
    logger.close()
    print(f"Test verification accuracy {100 * results['accuracy_test']:.2f}%, ROC AUC {results['roc_auc_test']:.3f} "
          f"({source}); outputs in {logger.directory}")
    return results


if __name__ == "__main__":
    main()
