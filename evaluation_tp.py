"""Exercise 2 Q7: reload a trained re-identification checkpoint, evaluate it and look at its rankings.

    python evaluation_tp.py --checkpoint checkpoints/main/<run>.pt [--data-root data/Market-1501-v15.09.15]
    python evaluation_tp.py --raw-pixels          # baseline: nearest neighbour on the input pixels, no learning

The network is rebuilt from the config saved in the checkpoint (backbone, feat_dim, num_classes), fed at the
checkpoint's input size and evaluated by ``main.evaluate``: the same weights on the same data give the
numbers ``main.py`` reported. Outputs under ``runs/evaluation_tp/<run>/``: ``results.json`` (rank-1/5/10,
mAP, CMC), ``cmc.png`` (the CMC curve) and ``ranked_list.png`` (queries with their top-10 gallery images,
framed green for a true match and red otherwise).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from torch import nn  # noqa: E402

from data import (  # noqa: E402
    Market1501,
    check_evaluation_sets,
    dry_run_subsets,
    evaluation_loader,
    ids_and_cameras,
    read_image,
)
from main import evaluate  # noqa: E402
from network import ReIDNet, one_line  # noqa: E402
from utils.io import load_checkpoint, write_json_atomic  # noqa: E402
from utils.reid_transforms import evaluation_transform  # noqa: E402
from utils.synthetic_market import DEFAULT_ROOT, dataset_name, ensure_synthetic_market  # noqa: E402
from utils.training import claim_run_folder, resolve_device  # noqa: E402

SCRIPT = "evaluation_tp"
CONFIG_KEYS = ("num_classes", "backbone", "feat_dim", "height", "width")
TILE_HEIGHT, TILE_WIDTH = 128, 64
TRUE_MATCH, FALSE_MATCH, QUERY_FRAME = (40, 170, 60), (210, 40, 40), (90, 90, 90)


def load_reid_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[ReIDNet, dict[str, Any]]:
    """Rebuild the network saved by ``main.py``: ``(model in eval mode, config)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a ``main.py`` checkpoint, or weights that do not fit its config (one line naming the file).
    """
    # BEGIN SOLUTION
    state = load_checkpoint(path, map_location=device)  # weights_only=True: loading runs no code
    config = state.get("config")
    if "model" not in state or not isinstance(config, dict) or any(key not in config for key in CONFIG_KEYS):
        raise ValueError(f"{path}: not a main.py checkpoint (expected 'model' weights and a 'config' with "
                         f"{', '.join(CONFIG_KEYS)})")
    try:
        model = ReIDNet(config["num_classes"], backbone=config["backbone"], feat_dim=config["feat_dim"])
        model.load_state_dict(state["model"], strict=True)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ValueError(f"{path}: its weights do not fit its config {config} ({one_line(error)})") from None
    return model.to(device).eval(), config
    # END SOLUTION


class RawPixels(nn.Module):
    """The baseline "network": its embedding is the input image itself, flattened (no parameter, no learning)."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pixels = images.flatten(1)
        return pixels, pixels[:, :0], pixels


def plot_cmc(results: dict[str, Any], path: Path, title: str) -> None:
    """The CMC curve: fraction of queries whose first true match is within the top k, k = 1..len(cmc)."""
    cmc = np.asarray(results["cmc"])
    ranks = np.arange(1, len(cmc) + 1)
    figure, axis = plt.subplots(figsize=(5, 3.6))
    axis.plot(ranks, 100 * cmc, marker=".", label=f"rank-1 {100 * cmc[0]:.1f}%, mAP {100 * results['mAP']:.1f}%")
    axis.set(xlabel="rank k", ylabel="matching rate (%)", title=title, ylim=(0, 101), xlim=(1, len(cmc)))
    axis.set_xscale("log")
    ticks = [k for k in (1, 2, 5, 10, 20, 50) if k <= len(cmc)]
    axis.set_xticks(ticks, [str(k) for k in ticks])
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def draw_ranked_list(distmat: np.ndarray, query: Any, gallery: Any, path: Path, title: str, *,
                     num_queries: int = 8, top_k: int = 10) -> None:
    """One row per query (evenly spread over the query set): the query, then its ``top_k`` gallery images
    framed green (same person) or red, each labelled with its person id and camera. Gallery images of the
    query's person and camera are left out, as the protocol ignores them."""
    q_ids, q_cams = ids_and_cameras(query)
    g_ids, g_cams = ids_and_cameras(gallery)
    border, label_height, gap = 4, 12, 10
    tile_w, tile_h = TILE_WIDTH + 2 * border, TILE_HEIGHT + 2 * border + label_height
    rows = np.unique(np.linspace(0, len(q_ids) - 1, min(num_queries, len(q_ids))).round().astype(int))
    canvas = Image.new("RGB", ((top_k + 1) * tile_w + gap, len(rows) * tile_h + label_height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((border, 0), title, fill=(0, 0, 0))

    def paste(image_path: str, x: int, y: int, frame: tuple[int, int, int], label: str) -> None:
        draw.rectangle([x, y, x + tile_w - 1, y + TILE_HEIGHT + 2 * border - 1], fill=frame)
        canvas.paste(read_image(image_path).resize((TILE_WIDTH, TILE_HEIGHT)), (x + border, y + border))
        draw.text((x + border, y + TILE_HEIGHT + 2 * border), label, fill=(0, 0, 0))

    for row, q in enumerate(rows):
        y = label_height + row * tile_h
        paste(query.imgs[q], 0, y, QUERY_FRAME, f"Q {q_ids[q]} c{q_cams[q]}")
        order = np.argsort(distmat[q], kind="stable")
        order = order[~((g_ids[order] == q_ids[q]) & (g_cams[order] == q_cams[q]))][:top_k]
        for rank, g in enumerate(order):
            frame = TRUE_MATCH if g_ids[g] == q_ids[q] else FALSE_MATCH
            paste(gallery.imgs[g], gap + (rank + 1) * tile_w, y, frame, f"{g_ids[g]} c{g_cams[g]}")
    canvas.save(path)


def latest_checkpoint(folder: Path) -> Path:
    checkpoints = sorted(folder.glob("*.pt"), key=lambda path: path.stat().st_mtime)
    if not checkpoints:
        raise SystemExit(f"error: no checkpoint in {folder}: train with main.py first or pass --checkpoint")
    return checkpoints[-1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None,
                        help="main.py checkpoint (default: the newest under --checkpoint-dir/main/)")
    parser.add_argument("--raw-pixels", action="store_true",
                        help="evaluate the raw-pixel nearest-neighbour baseline instead of a network")
    parser.add_argument("--data-root", default=None,
                        help=f"Market-1501 folder (default {DEFAULT_ROOT}, the synthetic set, generated on first use)")
    parser.add_argument("--height", type=int, default=64,
                        help="--raw-pixels only: image height (default 64; a network uses its checkpoint's)")
    parser.add_argument("--width", type=int, default=32, help="--raw-pixels only: image width (default 32)")
    parser.add_argument("--batch-size", type=int, default=128, help="evaluation batch size (default 128)")
    parser.add_argument("--no-flip-test", action="store_true", help="embed the image only (default: + its mirror)")
    parser.add_argument("--num-queries", type=int, default=8, help="rows of the ranked-list figure (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto picks CUDA when available")
    parser.add_argument("--dry-run", action="store_true", help="a tiny evaluation (16 queries): checks the code path")
    parser.add_argument("--runs-dir", default="runs", help="output root (default runs/)")
    parser.add_argument("--run-name", default=None, help="output folder name (default: date and time)")
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="where --checkpoint is looked for by default")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    for name in ("height", "width", "batch_size", "num_queries"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.workers < 0:
        raise SystemExit(f"error: --workers must be >= 0, got {args.workers}")
    device = resolve_device(args.device)
    checkpoint = None
    if not args.raw_pixels:
        checkpoint = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(Path(args.checkpoint_dir) / "main")

    # BEGIN SOLUTION
    try:
        if args.raw_pixels:
            model, height, width, title = RawPixels(), args.height, args.width, "raw pixels"
        else:
            model, config = load_reid_checkpoint(checkpoint, device)
            height, width, title = config["height"], config["width"], config["backbone"]
        data_root = Path(args.data_root) if args.data_root else ensure_synthetic_market(DEFAULT_ROOT)
        query, gallery = (Market1501(data_root, split, transform=evaluation_transform(height, width))
                          for split in ("query", "gallery"))
        check_evaluation_sets(query, gallery)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    if args.dry_run:  # the subsets main.py --dry-run evaluates on
        query, gallery = dry_run_subsets(query, gallery)
    loaders = [evaluation_loader(dataset, args.batch_size, args.workers, device.type == "cuda")
               for dataset in (query, gallery)]
    flip = not args.raw_pixels and not args.no_flip_test
    _, output = claim_run_folder(args.runs_dir, SCRIPT, args.run_name)
    try:
        results = evaluate(model, *loaders, device, flip=flip, keep_distances=True)
    except ValueError as error:
        raise SystemExit(f"error: evaluation: {str(error).strip().splitlines()[-1]}") from None
    distmat = results.pop("distmat").cpu().numpy()

    dataset = dataset_name(data_root)
    title = f"{title} at {height}x{width} on the {dataset}"
    write_json_atomic(output / "results.json", {
        **results, "checkpoint": str(checkpoint) if checkpoint else None, "raw_pixels": args.raw_pixels,
        "data_root": str(data_root), "dataset": dataset, "height": height, "width": width,
        "num_query": len(query), "num_gallery": len(gallery), "flip_test": flip})
    plot_cmc(results, output / "cmc.png", f"CMC: {title}")
    draw_ranked_list(distmat, query, gallery, output / "ranked_list.png", title, num_queries=args.num_queries)
    print(f"{title}: rank-1 {100 * results['rank1']:.1f}%  rank-5 {100 * results['rank5']:.1f}%  "
          f"rank-10 {100 * results['rank10']:.1f}%  mAP {100 * results['mAP']:.1f}%  "
          f"({len(query)} queries, {len(gallery)} gallery images; outputs in {output})")
    return results
    # END SOLUTION


if __name__ == "__main__":
    main()
