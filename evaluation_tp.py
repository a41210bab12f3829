"""Exercise 2 Q7: reload a trained re-identification checkpoint, evaluate it and look at its rankings.

    python evaluation_tp.py --checkpoint checkpoints/main/<run>.pt [--data-root data/Market-1501-v15.09.15]
    python evaluation_tp.py --raw-pixels          # baseline: nearest neighbour on raw pixels, no learning

The network is rebuilt from the model config saved in the checkpoint (backbone, feat_dim, num_classes)
and fed at the checkpoint's input size, then evaluated with ``main.evaluate``'s protocol; the same weights
on the same data give the numbers ``main.py`` reported. Outputs under ``runs/evaluation_tp/<run>/``:
``results.json`` (rank-1/5/10, mAP, CMC), ``cmc.png`` (the CMC curve) and ``ranked_list.png`` (queries with
their top-10 gallery images, framed green for a true match and red otherwise).
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

from main import ImageSet, dry_run_subsets, load_image_set, query_gallery_distances, ranking_metrics  # noqa: E402
from network import ReIDNet  # noqa: E402
from utils.io import load_checkpoint, write_json_atomic  # noqa: E402
from utils.metrics import euclidean_distance_matrix  # noqa: E402
from utils.synthetic_market import DEFAULT_ROOT, IMAGE_HEIGHT, IMAGE_WIDTH, ensure_synthetic_market  # noqa: E402
from utils.training import default_run_name, resolve_device  # noqa: E402

SCRIPT = "evaluation_tp"
INPUT_KEYS = ("height", "width")
TRUE_MATCH, FALSE_MATCH, QUERY_FRAME = (40, 170, 60), (210, 40, 40), (90, 90, 90)


def load_reid_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[ReIDNet, int, int]:
    """Rebuild the network saved by ``main.py`` and its input size ``(model, height, width)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a checkpoint, or its config and weights do not describe a ReIDNet (one line).
    """
    # BEGIN SOLUTION
    state = load_checkpoint(path, map_location=device)
    config = state.get("config")
    if not isinstance(config, dict) or "model" not in state or any(
            not isinstance(config.get(key), int) for key in INPUT_KEYS):
        raise ValueError(f"{path}: not a main.py checkpoint (expected 'model' weights and a 'config' with "
                         f"the network and its input {'/'.join(INPUT_KEYS)})")
    model_config = {key: value for key, value in config.items() if key not in INPUT_KEYS}
    model = ReIDNet.from_config(model_config, state["model"], source=path)
    return model.to(device).eval(), config["height"], config["width"]
    # END SOLUTION


def raw_pixel_distances(query: ImageSet, gallery: ImageSet) -> torch.Tensor:
    """(Q, G) Euclidean distances between raw pixel vectors in [0, 1]: what matching costs without learning."""
    return euclidean_distance_matrix(query.images.flatten(1).float() / 255, gallery.images.flatten(1).float() / 255,
                                     normalize=False)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def ranked_gallery(distances: np.ndarray, query_id: int, query_camera: int, gallery: ImageSet) -> np.ndarray:
    """Gallery indices by increasing distance (stable), without the query's own id-and-camera images,
    which the protocol ignores."""
    order = np.argsort(distances, kind="stable")
    ignored = (gallery.ids[order] == query_id) & (gallery.cameras[order] == query_camera)
    return order[~ignored]


def draw_ranked_list(distmat: np.ndarray, query: ImageSet, gallery: ImageSet, path: Path, *,
                     num_queries: int = 8, top_k: int = 10) -> None:
    """One row per query (evenly spread over the query set): the query, then its ``top_k`` gallery images
    framed green (same identity) or red, each labelled with its person id and camera."""
    border, label_height, gap = 4, 12, 10
    tile_w, tile_h = IMAGE_WIDTH + 2 * border, IMAGE_HEIGHT + 2 * border + label_height
    rows = np.unique(np.linspace(0, len(query.ids) - 1, min(num_queries, len(query.ids))).round().astype(int))
    canvas = Image.new("RGB", ((top_k + 1) * tile_w + gap, len(rows) * tile_h), "white")
    draw = ImageDraw.Draw(canvas)

    def paste(image_path: str, x: int, y: int, frame: tuple[int, int, int], label: str) -> None:
        draw.rectangle([x, y, x + tile_w - 1, y + IMAGE_HEIGHT + 2 * border - 1], fill=frame)
        with Image.open(image_path) as image:
            canvas.paste(image.convert("RGB").resize((IMAGE_WIDTH, IMAGE_HEIGHT)), (x + border, y + border))
        draw.text((x + border, y + IMAGE_HEIGHT + 2 * border), label, fill=(0, 0, 0))

    for row, q in enumerate(rows):
        y = row * tile_h
        paste(query.paths[q], 0, y, QUERY_FRAME, f"Q {query.ids[q]} c{query.cameras[q]}")
        ranked = ranked_gallery(distmat[q], query.ids[q], query.cameras[q], gallery)[:top_k]
        for rank, g in enumerate(ranked):
            frame = TRUE_MATCH if gallery.ids[g] == query.ids[q] else FALSE_MATCH
            paste(gallery.paths[g], gap + (rank + 1) * tile_w, y, frame, f"{gallery.ids[g]} c{gallery.cameras[g]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def latest_checkpoint(folder: Path) -> Path:
    checkpoints = sorted(folder.glob("*.pt"), key=lambda path: path.stat().st_mtime)
    if not checkpoints:
        raise SystemExit(f"error: no checkpoint in {folder}: train with main.py first or pass --checkpoint")
    return checkpoints[-1]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None,
                        help="main.py checkpoint (default: the newest under checkpoints/main/)")
    parser.add_argument("--raw-pixels", action="store_true",
                        help="evaluate the raw-pixel nearest-neighbour baseline instead of a network")
    parser.add_argument("--data-root", default=None,
                        help=f"Market-1501 folder (default {DEFAULT_ROOT}, the synthetic set, generated on first use)")
    parser.add_argument("--height", type=int, default=IMAGE_HEIGHT,
                        help=f"--raw-pixels only: image height (default {IMAGE_HEIGHT}; a network uses its own)")
    parser.add_argument("--width", type=int, default=IMAGE_WIDTH,
                        help=f"--raw-pixels only: image width (default {IMAGE_WIDTH})")
    parser.add_argument("--batch-size", type=int, default=128, help="evaluation batch size (default 128)")
    parser.add_argument("--no-flip-test", action="store_true", help="embed the image only (default: + its mirror)")
    parser.add_argument("--num-queries", type=int, default=8, help="rows of the ranked-list figure (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="threads decoding the images (default 2)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when available")
    parser.add_argument("--dry-run", action="store_true", help="a tiny evaluation (16 queries): checks the code path")
    parser.add_argument("--runs-dir", default="runs", help="output root (default runs/)")
    parser.add_argument("--run-name", default=None, help="output folder name (default: date and time)")
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="where --checkpoint is looked for by default")
    args = parser.parse_args(argv)
    for name in ("height", "width", "batch_size", "num_queries"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    device = resolve_device(args.device)

    try:
        if args.raw_pixels:
            checkpoint, model, height, width = None, None, args.height, args.width
        else:
            checkpoint = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(
                Path(args.checkpoint_dir) / "main")
            model, height, width = load_reid_checkpoint(checkpoint, device)
        data_root = Path(args.data_root) if args.data_root else ensure_synthetic_market(DEFAULT_ROOT)
        query, gallery = (load_image_set(data_root, split, height, width, args.workers)
                          for split in ("query", "gallery"))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    if args.dry_run:
        query, gallery = dry_run_subsets(query, gallery)

    if model is None:
        distmat = raw_pixel_distances(query, gallery)
        title = f"raw-pixel nearest neighbour, {height}x{width}"
    else:
        distmat = query_gallery_distances(model, query, gallery, batch_size=args.batch_size,
                                          flip=not args.no_flip_test)
        title = f"{model.backbone_name} at {height}x{width}"
    results = ranking_metrics(distmat, query, gallery)
    output = Path(args.runs_dir) / SCRIPT / (args.run_name or default_run_name())
    write_json_atomic(output / "results.json", {
        **results, "checkpoint": str(checkpoint) if checkpoint else None, "raw_pixels": args.raw_pixels,
        "data_root": str(data_root), "height": height, "width": width, "num_query": len(query.ids),
        "num_gallery": len(gallery.ids), "flip_test": model is not None and not args.no_flip_test})
    plot_cmc(results, output / "cmc.png", f"CMC: {title}")
    draw_ranked_list(distmat.cpu().numpy(), query, gallery, output / "ranked_list.png", num_queries=args.num_queries)
    print(f"{title}: rank-1 {100 * results['rank1']:.1f}%  rank-5 {100 * results['rank5']:.1f}%  "
          f"rank-10 {100 * results['rank10']:.1f}%  mAP {100 * results['mAP']:.1f}%  "
          f"({len(query.ids)} queries, {len(gallery.ids)} gallery images; outputs in {output})")
    return results


if __name__ == "__main__":
    main()
