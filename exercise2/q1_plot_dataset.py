"""Exercise 2 Q1: what does Market-1501 look like? A grid of identities across cameras, and split statistics.

    python exercise2/q1_plot_dataset.py [--data-root data/Market-1501-v15.09.15]

Each row of the figure is one training identity, each column one camera (an empty cell: that camera never
saw the person): the same person changes pose, scale, light and background between cameras, which is
what a re-identification model must see through. The printed table gives, per split, the identities
(distractors excluded), images (junk excluded, as the dataset class loads them), cameras, distractor
(``0000``) and junk (``-1``) images. Outputs: ``runs/q1_plot_dataset/<run>/identities_by_camera.png`` and
``statistics.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data import (  # noqa: E402
    DISTRACTOR_ID,
    JUNK_ID,
    SPLIT_FOLDERS,
    Market1501,
    UnreadableImageError,
    list_images,
    parse_market_name,
    read_image,
)
from utils.io import write_json_atomic  # noqa: E402
from utils.synthetic_market import DEFAULT_ROOT, dataset_name, ensure_synthetic_market  # noqa: E402
from utils.training import claim_run_folder  # noqa: E402

SCRIPT = "q1_plot_dataset"


def split_statistics(dataset: Market1501) -> dict[str, int]:
    """Identities (distractors excluded), images (junk excluded), cameras, distractor and junk images."""
    return {
        "identities": len(set(dataset.ids) - {DISTRACTOR_ID}),
        "images": len(dataset.imgs),
        "cameras": len(set(dataset.cameras)),
        "distractors": sum(pid == DISTRACTOR_ID for pid in dataset.ids),
        "junk": sum(parse_market_name(path)[0] == JUNK_ID
                    for path in list_images(dataset.root / SPLIT_FOLDERS[dataset.split])),
    }


def plot_identities_by_camera(dataset: Market1501, path: Path, num_ids: int, seed: int, title: str) -> list[int]:
    """Save the grid (``num_ids`` identities seen by the most cameras, drawn with ``seed``) x cameras;
    return the identities shown."""
    cameras = sorted(set(dataset.cameras))
    first_image: dict[tuple[int, int], str] = {}
    for image_path, pid, camera in zip(dataset.imgs, dataset.ids, dataset.cameras):
        first_image.setdefault((pid, camera), image_path)
    coverage = {pid: sum((pid, camera) in first_image for camera in cameras)
                for pid in sorted(set(dataset.ids) - {DISTRACTOR_ID})}
    # Prefer people seen by many cameras (the point of the figure); the seed picks among them.
    rng = np.random.default_rng(seed)
    candidates = sorted(coverage, key=lambda pid: (-coverage[pid], rng.random()))
    shown = sorted(candidates[:num_ids])
    figure, axes = plt.subplots(len(shown), len(cameras), figsize=(1.1 * len(cameras), 2.0 * len(shown)),
                                squeeze=False)
    for row, pid in enumerate(shown):
        for column, camera in enumerate(cameras):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            if (pid, camera) in first_image:
                axis.imshow(read_image(first_image[(pid, camera)]))
            else:
                axis.set_facecolor((0.93, 0.93, 0.93))
            if row == 0:
                axis.set_title(f"camera {camera}", fontsize=8)
            if column == 0:
                axis.set_ylabel(f"id {pid}", fontsize=8)
    figure.suptitle(f"{title}: training identities (rows) across cameras (columns)", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return shown


def main(argv: list[str] | None = None) -> dict[str, dict[str, int]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None,
                        help=f"Market-1501 folder (default {DEFAULT_ROOT}, the synthetic set, generated on first use)")
    parser.add_argument("--num-ids", type=int, default=6, help="identities (rows) in the figure (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="which identities are shown (default 0)")
    parser.add_argument("--dry-run", action="store_true", help="a 2-identity figure: checks the code path")
    parser.add_argument("--runs-dir", default="runs", help="output root (default runs/)")
    parser.add_argument("--run-name", default=None, help="output folder name (default: date and time)")
    args = parser.parse_args(argv)
    if args.num_ids <= 0:
        raise SystemExit(f"error: --num-ids must be > 0, got {args.num_ids}")
    if args.seed < 0:
        raise SystemExit(f"error: --seed must be >= 0, got {args.seed}")
    try:
        root = Path(args.data_root) if args.data_root else ensure_synthetic_market(DEFAULT_ROOT)
        splits = {split: Market1501(root, split) for split in SPLIT_FOLDERS}
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None

    statistics = {split: split_statistics(dataset) for split, dataset in splits.items()}
    columns = ("identities", "images", "cameras", "distractors", "junk")
    dataset = dataset_name(root)
    print(f"{root} ({dataset})\n{'split':<10}" + "".join(f"{name:>13}" for name in columns))
    for split, numbers in statistics.items():
        print(f"{split:<10}" + "".join(f"{numbers[name]:>13}" for name in columns))
    shared = set(splits["train"].ids) & set(splits["gallery"].ids) - {DISTRACTOR_ID}
    print(f"identities shared by train and test: {len(shared)}")

    _, output = claim_run_folder(args.runs_dir, SCRIPT, args.run_name)
    figure_path = output / "identities_by_camera.png"
    try:
        shown = plot_identities_by_camera(splits["train"], figure_path, 2 if args.dry_run else args.num_ids,
                                          args.seed, dataset)
    except UnreadableImageError as error:
        raise SystemExit(f"error: {error}") from None
    write_json_atomic(output / "statistics.json", {"data_root": str(root), "dataset": dataset, "splits": statistics,
                                                   "train_test_shared_identities": len(shared),
                                                   "identities_shown": shown})
    print(f"figure: {figure_path}")
    return statistics


if __name__ == "__main__":
    main()
