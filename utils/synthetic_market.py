"""The embedded Exercise 2 dataset: procedurally drawn pedestrians in the exact Market-1501 layout.

No internet here, so ``main.py`` trains by default on this generated set; the real Market-1501 drops in
unchanged (``--data-root data/Market-1501-v15.09.15``). What makes it a re-identification problem:

- each identity has persistent attributes (upper and lower clothing colours and patterns, sleeves,
  trousers/shorts/skirt, hair, hat, skin, shoes, bag, build) drawn from a generator seeded by its id;
- each camera changes the view: its own background, illumination, colour cast, blur, resolution and
  preferred viewpoint (front, back, left, right); each track (an identity seen by one camera) has its own
  position, scale, background crop and sometimes an occluder, and frames in a track move slightly.

Same-camera images of a person are therefore near-duplicates (the evaluation protocol ignores them)
while cross-camera ones share only the person: raw-pixel nearest neighbour mostly matches backgrounds.

Layout and names follow Market-1501: ``bounding_box_train/``, ``bounding_box_test/``, ``query/`` with
``PPPP_cCsS_FFFFFF_BB.jpg`` (person id, camera 1-6, sequence, frame, box) 128x64 RGB JPEGs; train and test
identities are disjoint; one query per (test identity, camera) and the rest in the gallery, so every query
has gallery matches in other cameras; the gallery also holds distractors (``0000_``: people outside the
identity set, badly cropped) and junk (``-1_``: background or body fragments).

CLI: ``python -m utils.synthetic_market OUT [--ids N --images-per-id K --seed S ...]``
(Market-1501's size: ``--ids 750 --images-per-id 18``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_HEIGHT, IMAGE_WIDTH = 128, 64
NUM_CAMERAS = 6
SPLIT_FOLDERS = ("bounding_box_train", "bounding_box_test", "query")
DEFAULT_ROOT = Path("data") / "synthetic-market1501"
MARKER_FILE = "synthetic_market.json"  # written by the generator: how a synthetic set is told from the real one
DEFAULTS = {"ids": 100, "images_per_id": 12, "distractor_fraction": 0.2, "junk_fraction": 0.25, "seed": 0}

# Seed-sequence tags: every random draw is keyed by what it describes, so an identity looks the same
# whatever else is generated, and adding images never changes the existing ones.
_IDENTITY, _CAMERA, _TRACK, _FRAME, _DISTRACTOR, _JUNK, _LAYOUT = range(7)

CLOTHING_COLOURS = np.array([
    [200, 30, 35], [30, 60, 170], [20, 30, 80], [40, 140, 60], [230, 200, 40], [235, 235, 230],
    [25, 25, 28], [128, 128, 132], [235, 120, 30], [120, 50, 150], [230, 130, 170], [110, 70, 40],
    [40, 170, 190], [110, 120, 50], [190, 170, 130], [150, 20, 60],
], dtype=np.float32) / 255
SKIN_TONES = np.array([[250, 215, 185], [225, 180, 140], [190, 140, 100], [140, 95, 65], [95, 65, 45]],
                      dtype=np.float32) / 255
HAIR_COLOURS = np.array([[20, 18, 16], [70, 45, 25], [140, 95, 50], [215, 185, 120], [170, 170, 170],
                         [130, 45, 20]], dtype=np.float32) / 255
UPPER_PATTERNS = ("plain", "horizontal_stripes", "vertical_stripes", "two_tone", "logo", "checks")
LOWER_TYPES = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "handbag", "shoulder_bag")
VIEWS = ("front", "back", "left", "right")


@dataclass(frozen=True)
class Identity:
    """Persistent appearance of one person: colours are RGB in [0, 1], sizes are fractions of body height."""

    skin: np.ndarray
    hair: np.ndarray
    long_hair: bool
    hat: np.ndarray | None
    upper: np.ndarray
    upper_second: np.ndarray
    upper_pattern: str
    stripe_period: float
    long_sleeves: bool
    lower: np.ndarray
    lower_type: str
    shoes: np.ndarray
    bag: str
    bag_colour: np.ndarray
    bag_side: int
    height: float
    width: float


@dataclass(frozen=True)
class Camera:
    """How one camera sees everybody: a background panorama, light, colour cast, blur and viewpoints."""

    panorama: np.ndarray  # (H, 4W, 3) in [0, 1]; each track sees a window of it
    noise: np.ndarray  # (2H, 2W, 3) sensor noise; each image adds a window of it
    gain: float
    cast: np.ndarray  # (3,) per-channel gain
    blur: float  # Gaussian radius, pixels
    low_resolution: float  # downscale factor before upscaling back (1 = sharp)
    view_weights: np.ndarray  # (4,) probabilities of VIEWS
    scale_range: tuple[float, float]


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _colour(rng: np.random.Generator, palette: np.ndarray, jitter: float = 0.06) -> np.ndarray:
    base = palette[rng.integers(len(palette))]
    return np.clip(base + rng.normal(0, jitter, 3), 0, 1).astype(np.float32)


def make_identity(seed: int, key: int, kind: int = _IDENTITY) -> Identity:
    """The appearance of person ``key`` (deterministic in ``(seed, kind, key)``)."""
    rng = _rng(seed, kind, key)
    upper = _colour(rng, CLOTHING_COLOURS)
    second = _colour(rng, CLOTHING_COLOURS)
    while np.abs(second - upper).sum() < 0.45:  # a pattern must be visible
        second = _colour(rng, CLOTHING_COLOURS)
    return Identity(
        skin=_colour(rng, SKIN_TONES, 0.03),
        hair=_colour(rng, HAIR_COLOURS, 0.04),
        long_hair=bool(rng.random() < 0.35),
        hat=_colour(rng, CLOTHING_COLOURS) if rng.random() < 0.2 else None,
        upper=upper,
        upper_second=second,
        upper_pattern=UPPER_PATTERNS[rng.choice(len(UPPER_PATTERNS), p=[0.35, 0.15, 0.1, 0.15, 0.15, 0.1])],
        stripe_period=float(rng.uniform(0.06, 0.1)),
        long_sleeves=bool(rng.random() < 0.55),
        lower=_colour(rng, CLOTHING_COLOURS),
        lower_type=LOWER_TYPES[rng.choice(3, p=[0.6, 0.25, 0.15])],
        shoes=_colour(rng, CLOTHING_COLOURS, 0.05),
        bag=BAGS[rng.choice(4, p=[0.4, 0.25, 0.2, 0.15])],
        bag_colour=_colour(rng, CLOTHING_COLOURS),
        bag_side=int(rng.choice([-1, 1])),
        height=float(rng.uniform(0.86, 1.0)),
        width=float(rng.uniform(0.82, 1.2)),
    )


def make_camera(seed: int, camera: int) -> Camera:
    """Camera ``camera``'s background panorama and imaging conditions (deterministic in ``(seed, camera)``)."""
    rng = _rng(seed, _CAMERA, camera)
    height, width = IMAGE_HEIGHT, 4 * IMAGE_WIDTH
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    cols = np.arange(width, dtype=np.float32)[None, :, None]
    wall, floor = rng.uniform(0.1, 0.9, 3).astype(np.float32), rng.uniform(0.1, 0.9, 3).astype(np.float32)
    horizon = rng.uniform(0.45, 0.8)
    panorama = np.where(rows < horizon, wall * (0.8 + 0.3 * rows), floor * (1.1 - 0.3 * rows))
    # Architecture: vertical pillars/windows on the wall, tile lines on the floor, a few large objects.
    period = rng.uniform(18, 60)
    duty = rng.uniform(0.2, 0.6)
    pillar = ((cols / period + rng.random()) % 1.0) < duty
    panorama = np.where(pillar & (rows < horizon), panorama * rng.uniform(0.55, 1.4, 3), panorama)
    tiles = ((rows * height / rng.uniform(6, 14)) % 1.0) < 0.12
    panorama = np.where(tiles & (rows >= horizon), panorama * 0.75, panorama)
    for _ in range(rng.integers(2, 6)):
        x0, w = rng.uniform(0, width), rng.uniform(10, 50)
        y0, h = rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.45)
        box = (cols >= x0) & (cols < x0 + w) & (rows >= y0) & (rows < y0 + h)
        panorama = np.where(box, rng.uniform(0, 1, 3).astype(np.float32), panorama)
    panorama = panorama + rng.normal(0, 0.03, panorama.shape)
    low = rng.uniform(0.76, 0.9)
    return Camera(
        panorama=np.clip(panorama, 0, 1).astype(np.float32),
        noise=rng.normal(0, 0.02, (2 * IMAGE_HEIGHT, 2 * IMAGE_WIDTH, 3)).astype(np.float32),
        gain=float(rng.uniform(0.6, 1.3)),
        cast=rng.uniform(0.85, 1.15, 3).astype(np.float32),
        blur=float(rng.uniform(0.0, 1.2)),
        low_resolution=float(rng.choice([1.0, 1.0, 0.6, 0.45])),
        view_weights=rng.dirichlet(np.full(4, 0.7)),
        scale_range=(float(low), float(min(low + rng.uniform(0.03, 0.1), 0.98))),
    )


@dataclass(frozen=True)
class Track:
    """One identity seen by one camera: viewpoint, placement, background window, occluder, lighting."""

    view: str
    centre_x: float  # pixels
    scale: float  # body height / image height
    foot_y: float  # pixels
    background_x: int
    occluder: tuple[float, float, float, float, np.ndarray] | None  # x0, y0, x1, y1 (pixels), colour
    gain: float
    sequence: int
    first_frame: int


def make_track(seed: int, pid_key: int, camera_id: int, camera: Camera) -> Track:
    rng = _rng(seed, _TRACK, pid_key, camera_id)
    scale = rng.uniform(*camera.scale_range)
    occluder = None
    if rng.random() < 0.3:
        # Something between camera and person: a bottom band (bench, car) or a side band (pole, passer-by).
        colour = rng.uniform(0, 1, 3).astype(np.float32)
        if rng.random() < 0.5:
            top = rng.uniform(0.7, 0.85) * IMAGE_HEIGHT
            occluder = (0.0, top, float(IMAGE_WIDTH), float(IMAGE_HEIGHT), colour)
        else:
            left = rng.uniform(0, IMAGE_WIDTH * 0.7)
            occluder = (left, 0.0, left + rng.uniform(6, 16), float(IMAGE_HEIGHT), colour)
    return Track(
        view=VIEWS[rng.choice(4, p=camera.view_weights)],
        centre_x=float(IMAGE_WIDTH / 2 + rng.uniform(-7, 7)),
        scale=float(scale),
        foot_y=float(IMAGE_HEIGHT - rng.uniform(1, 6)),
        background_x=int(rng.integers(0, camera.panorama.shape[1] - IMAGE_WIDTH)),
        occluder=occluder,
        gain=float(rng.uniform(0.85, 1.15)),
        sequence=int(rng.integers(1, 7)),
        first_frame=int(rng.integers(0, 150_000)),
    )


_ROWS = np.arange(IMAGE_HEIGHT, dtype=np.float32)[:, None] + 0.5
_COLS = np.arange(IMAGE_WIDTH, dtype=np.float32)[None, :] + 0.5


def _box(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return (_COLS >= x0) & (_COLS < x1) & (_ROWS >= y0) & (_ROWS < y1)


def draw_person(image: np.ndarray, person: Identity, view: str, centre_x: float, foot_y: float,
                body_height: float, stride: float) -> None:
    """Paint ``person`` into ``image`` (H, W, 3) in place.

    Args:
        view: one of ``VIEWS``; side views draw a narrower body and swing the legs and arm.
        centre_x, foot_y: body axis and sole position, pixels.
        body_height: pixels from the top of the head to the soles.
        stride: walking phase in [-1, 1] (leg spread).
    """
    h = body_height
    top = foot_y - h

    def y(fraction: float) -> float:
        return top + fraction * h

    side = view in ("left", "right")
    facing = -1 if view == "left" else 1
    half_torso = (0.085 if side else 0.13) * h * person.width
    arm_width = 0.05 * h
    hip, knee_skin, foot = y(0.52), y(0.7), y(0.955)

    # Bags behind the body first, so the body covers them.
    if person.bag == "backpack" and side:
        back_edge, pack_edge = centre_x - facing * 0.7 * half_torso, centre_x - facing * (half_torso + 0.09 * h)
        image[_box(min(back_edge, pack_edge), max(back_edge, pack_edge), y(0.17), y(0.43))] = person.bag_colour

    # Legs and lower clothing.
    if side:
        offset = stride * 0.12 * h * (_ROWS - hip) / (foot - hip)
        legs = ((np.abs(_COLS - centre_x - offset) < 0.055 * h * person.width)
                | (np.abs(_COLS - centre_x + offset) < 0.055 * h * person.width))
    else:
        gap = 0.06 * h * person.width
        legs = np.abs(np.abs(_COLS - centre_x) - gap) < 0.055 * h * person.width
    legs = legs & (_ROWS >= hip) & (_ROWS < foot)
    covered_to = {"trousers": foot, "shorts": y(0.66), "skirt": y(0.52)}[person.lower_type]
    image[legs & (_ROWS < covered_to)] = person.lower
    image[legs & (_ROWS >= covered_to)] = person.skin
    image[_box(centre_x - half_torso, centre_x + half_torso, y(0.48), y(0.58))] = person.lower
    if person.lower_type == "skirt":
        flare = half_torso + 0.08 * h * (_ROWS - hip) / (knee_skin - hip)
        image[(np.abs(_COLS - centre_x) < flare) & (_ROWS >= hip) & (_ROWS < knee_skin)] = person.lower
    shoe_offset = 0.03 * h * facing if side else 0.0
    image[legs.any(axis=0, keepdims=True) & (_ROWS >= foot - 0.01 * h) & (_ROWS < foot + 0.04 * h)
          & (np.abs(_COLS - centre_x - shoe_offset) < half_torso + 0.04 * h)] = person.shoes

    # Torso with its pattern.
    torso = _box(centre_x - half_torso, centre_x + half_torso, y(0.16), y(0.5))
    image[torso] = person.upper
    rel_y = (_ROWS - y(0.16)) / h
    rel_x = (_COLS - centre_x) / h
    period = person.stripe_period
    if person.upper_pattern == "horizontal_stripes":
        second = (rel_y % period) < period / 2
    elif person.upper_pattern == "vertical_stripes":
        second = (rel_x % period) < period / 2
    elif person.upper_pattern == "two_tone":
        second = rel_y > 0.17
    elif person.upper_pattern == "checks":
        second = ((rel_y % period) < period / 2) ^ ((rel_x % period) < period / 2)
    elif person.upper_pattern == "logo" and view == "front":
        second = (np.abs(rel_x) < 0.06) & (rel_y > 0.05) & (rel_y < 0.15)
    else:
        second = np.zeros_like(torso)
    image[torso & second] = person.upper_second

    # Arms: sleeves in the upper colour, then skin (forearm) and hands.
    sleeve_end = y(0.47) if person.long_sleeves else y(0.28)
    if side:
        swing = -stride * 0.05 * h
        arm = np.abs(_COLS - centre_x - swing * (_ROWS - y(0.17)) / (0.35 * h)) < arm_width / 2
    else:
        arm = (np.abs(_COLS - centre_x) >= half_torso) & (np.abs(_COLS - centre_x) < half_torso + arm_width)
    arm = arm & (_ROWS >= y(0.17)) & (_ROWS < y(0.52))
    image[arm & (_ROWS < sleeve_end)] = person.upper
    image[arm & (_ROWS >= sleeve_end)] = person.skin

    # Front-visible bag parts: straps, a handbag at the hand, a shoulder bag on the hip with its strap.
    if person.bag == "backpack" and view == "back":
        image[_box(centre_x - 0.1 * h, centre_x + 0.1 * h, y(0.18), y(0.42))] = person.bag_colour
    elif person.bag == "backpack" and view == "front":
        straps = np.abs(np.abs(_COLS - centre_x) - 0.07 * h) < 0.014 * h
        image[straps & (_ROWS >= y(0.16)) & (_ROWS < y(0.34))] = person.bag_colour
    elif person.bag in ("handbag", "shoulder_bag"):
        side_sign = (person.bag_side if view != "back" else -person.bag_side) if not side else facing
        bag_x = centre_x + side_sign * (half_torso + (0.5 if person.bag == "handbag" else 0.1) * arm_width)
        bag_top = y(0.47) if person.bag == "handbag" else y(0.42)
        image[_box(bag_x - 0.045 * h, bag_x + 0.045 * h, bag_top, bag_top + 0.11 * h)] = person.bag_colour
        if person.bag == "shoulder_bag" and not side:
            # Diagonal strap from the opposite shoulder down to the bag.
            slope = (2 * half_torso) / (0.26 * h)
            strap_x = centre_x - side_sign * half_torso + side_sign * slope * (_ROWS - y(0.16))
            image[torso & (np.abs(_COLS - strap_x) < 0.015 * h) & (_ROWS < y(0.42))] = person.bag_colour

    # Neck, head, hair, hat.
    image[_box(centre_x - 0.025 * h, centre_x + 0.025 * h, y(0.12), y(0.17))] = person.skin
    head_y, head_ry, head_rx = y(0.075), 0.07 * h, 0.055 * h
    head = ((_COLS - centre_x) / head_rx) ** 2 + ((_ROWS - head_y) / head_ry) ** 2 <= 1
    image[head] = person.skin
    if view == "back":
        hair = head.copy()
    elif side:
        hair = head & ((_ROWS < head_y - 0.02 * h) | ((_COLS - centre_x) * facing < -0.01 * h))
    else:
        hair = head & (_ROWS < head_y - 0.025 * h)
    if person.long_hair:
        hair_width = head_rx * (1.0 if view == "back" else 1.15)
        long_part = (np.abs(_COLS - centre_x) < hair_width) & (_ROWS >= head_y) & (_ROWS < y(0.24))
        if view == "front":
            long_part &= np.abs(_COLS - centre_x) > 0.7 * head_rx
        elif side:
            long_part &= (_COLS - centre_x) * facing < 0
        hair |= long_part
    image[hair] = person.hair
    if person.hat is not None:
        image[head & (_ROWS < head_y - 0.015 * h)] = person.hat
        image[_box(centre_x - 1.25 * head_rx, centre_x + 1.25 * head_rx,
                   head_y - 0.025 * h, head_y - 0.01 * h)] = person.hat


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, 3) float image, edges replicated; ``sigma`` in pixels."""
    radius = int(np.ceil(2 * sigma))
    if radius == 0:
        return image
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    taps /= taps.sum()
    # Rows then columns (columns by transposing): a weighted sum of shifted views, a few vector ops.
    for _ in range(2):
        size = image.shape[0]
        padded = np.concatenate([image[:1].repeat(radius, 0), image, image[-1:].repeat(radius, 0)])
        blurred = taps[0] * padded[:size]
        for shift in range(1, len(taps)):
            blurred += taps[shift] * padded[shift: shift + size]
        image = blurred.transpose(1, 0, 2)
    return image


def finish_image(image: np.ndarray, camera: Camera, gain: float, rng: np.random.Generator) -> Image.Image:
    """Apply the camera's light, colour cast, optics blur, sensor noise and resolution; return a PIL image."""
    image = gaussian_blur(image * (camera.gain * gain) * camera.cast, camera.blur + rng.uniform(0, 0.4))
    # Sensor noise: a random window of the camera's noise field (drawing fresh noise per image costs more
    # than the whole drawing).
    top, left = rng.integers(0, IMAGE_HEIGHT), rng.integers(0, IMAGE_WIDTH)
    image = image + camera.noise[top: top + IMAGE_HEIGHT, left: left + IMAGE_WIDTH]
    pil = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
    if camera.low_resolution < 1:
        small = (round(IMAGE_WIDTH * camera.low_resolution), round(IMAGE_HEIGHT * camera.low_resolution))
        pil = pil.resize(small, Image.BILINEAR).resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.BILINEAR)
    return pil


def render_frame(person: Identity, camera: Camera, track: Track, rng: np.random.Generator) -> Image.Image:
    """One detection box of ``person`` in ``track``: the track's placement plus small per-frame motion."""
    image = camera.panorama[:, track.background_x: track.background_x + IMAGE_WIDTH].copy()
    foot_y = min(track.foot_y + rng.uniform(-2, 2), IMAGE_HEIGHT - 1.0)
    # Detection boxes contain the whole person: the head stays inside the frame.
    body_height = min(IMAGE_HEIGHT * track.scale * person.height * rng.uniform(0.97, 1.03), foot_y - 1)
    draw_person(image, person, track.view, track.centre_x + rng.uniform(-2, 2), foot_y, body_height,
                rng.uniform(-1, 1))
    if track.occluder is not None:
        x0, y0, x1, y1, colour = track.occluder
        image[_box(x0, x1, y0, y1)] = colour
    return finish_image(image, camera, track.gain * rng.uniform(0.95, 1.05), rng)


def market_name(pid: int, camera: int, sequence: int, frame: int, box: int) -> str:
    """Market-1501 file name ``PPPP_cCsS_FFFFFF_BB.jpg`` (``-1`` for junk)."""
    person = "-1" if pid == -1 else f"{pid:04d}"
    return f"{person}_c{camera}s{sequence}_{frame:06d}_{box:02d}.jpg"


def _camera_plan(rng: np.random.Generator, num_images: int) -> dict[int, int]:
    """Which cameras see a person and how many boxes each: at least two per camera, so a test identity keeps
    a gallery image in every camera after one query per camera is taken out."""
    num_cameras = int(rng.integers(2, min(NUM_CAMERAS, num_images // 2) + 1))
    cameras = sorted(rng.choice(np.arange(1, NUM_CAMERAS + 1), num_cameras, replace=False).tolist())
    counts = np.full(num_cameras, 2) + rng.multinomial(num_images - 2 * num_cameras, np.full(num_cameras, 1 / num_cameras))
    return dict(zip(cameras, counts.tolist()))


def _save(image: Image.Image, path: Path, rng: np.random.Generator) -> None:
    image.save(path, "JPEG", quality=int(rng.integers(82, 96)))


def check_generator_arguments(ids: int, images_per_id: int, distractor_fraction: float, junk_fraction: float) -> None:
    """One-line ``ValueError`` naming the flag for arguments the generator cannot honour."""
    if ids < 1:
        raise ValueError(f"--ids must be >= 1, got {ids}")
    if images_per_id < 4:
        raise ValueError(f"--images-per-id must be >= 4 (two cameras, two boxes each), got {images_per_id}")
    if ids * 2 > 9999:
        raise ValueError(f"--ids must be <= 4999 (Market-1501 ids have 4 digits), got {ids}")
    if distractor_fraction < 0 or junk_fraction < 0:
        raise ValueError("--distractor-fraction and --junk-fraction must be >= 0")


def generate_market(
    out_dir: str | os.PathLike,
    *,
    ids: int = DEFAULTS["ids"],
    images_per_id: int = DEFAULTS["images_per_id"],
    distractor_fraction: float = DEFAULTS["distractor_fraction"],
    junk_fraction: float = DEFAULTS["junk_fraction"],
    seed: int = DEFAULTS["seed"],
    show_progress: bool = False,
) -> dict[str, int]:
    """Write a synthetic Market-1501 into ``out_dir`` (which must not exist yet) and return its counts.

    Args:
        ids: identities in each of the train and test splits (Market-1501: 751 / 750).
        images_per_id: mean boxes per identity, drawn uniformly in ``[K/2, 3K/2]`` (at least 4).
        distractor_fraction, junk_fraction: distractor (``0000``) and junk (``-1``) boxes added to the gallery,
            as fractions of the test identities' boxes (Market-1501: about 0.2 and 0.3).
        seed: everything drawn is a function of it; the same arguments give byte-identical files.

    The set is built in a temporary folder beside ``out_dir`` and renamed into place at the end, so an
    interrupted run never leaves a half-written dataset that later runs would trust.
    """
    check_generator_arguments(ids, images_per_id, distractor_fraction, junk_fraction)
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists: choose a new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        counts = _write_splits(staging, ids, images_per_id, distractor_fraction, junk_fraction, seed, show_progress)
        (staging / MARKER_FILE).write_text(json.dumps({
            "generator": "utils/synthetic_market.py", "ids": ids, "images_per_id": images_per_id,
            "distractor_fraction": distractor_fraction, "junk_fraction": junk_fraction, "seed": seed,
            "counts": counts}, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it private; a dataset folder is not
        try:
            os.replace(staging, out_dir)
        except OSError:
            if not out_dir.is_dir():
                raise
            shutil.rmtree(staging)  # another process finished the same (deterministic) set first
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return counts


def _write_splits(root: Path, ids: int, images_per_id: int, distractor_fraction: float, junk_fraction: float,
                  seed: int, show_progress: bool) -> dict[str, int]:
    from tqdm import tqdm

    for folder in SPLIT_FOLDERS:
        (root / folder).mkdir()
    layout = _rng(seed, _LAYOUT)
    # Train and test ids interleave in 1..2N as Market-1501's do in 1..1501.
    shuffled = layout.permutation(np.arange(1, 2 * ids + 1))
    splits = {"train": sorted(shuffled[:ids].tolist()), "test": sorted(shuffled[ids:].tolist())}
    cameras = {c: make_camera(seed, c) for c in range(1, NUM_CAMERAS + 1)}
    counts = {"train_images": 0, "query_images": 0, "gallery_images": 0, "distractors": 0, "junk": 0}
    low, high = max(4, images_per_id // 2), images_per_id + images_per_id // 2
    progress = tqdm(total=2 * ids, desc="identities", disable=not show_progress, leave=False)
    for split, pids in splits.items():
        for pid in pids:
            person = make_identity(seed, pid)
            plan_rng = _rng(seed, _IDENTITY, pid, 1)
            for camera_id, boxes in _camera_plan(plan_rng, int(plan_rng.integers(low, high + 1))).items():
                track = make_track(seed, pid, camera_id, cameras[camera_id])
                query_index = int(plan_rng.integers(boxes)) if split == "test" else -1
                frame = track.first_frame
                for index in range(boxes):
                    rng = _rng(seed, _FRAME, pid, camera_id, index)
                    frame += int(rng.integers(4, 40))
                    name = market_name(pid, camera_id, track.sequence, frame, int(rng.integers(1, 4)))
                    if split == "train":
                        folder, key = "bounding_box_train", "train_images"
                    elif index == query_index:
                        folder, key = "query", "query_images"
                    else:
                        folder, key = "bounding_box_test", "gallery_images"
                    _save(render_frame(person, cameras[camera_id], track, rng), root / folder / name, rng)
                    counts[key] += 1
            progress.update()
    progress.close()
    test_boxes = counts["query_images"] + counts["gallery_images"]
    for index in range(round(distractor_fraction * test_boxes)):
        rng = _rng(seed, _DISTRACTOR, index)
        camera_id = int(rng.integers(1, NUM_CAMERAS + 1))
        image = render_distractor(seed, index, cameras[camera_id], rng)
        # Frames 7k+1 (distractors) and 7k+4 (junk) never collide, so names stay unique.
        name = market_name(0, camera_id, int(rng.integers(1, 7)), 7 * index + 1, int(rng.integers(1, 9)))
        _save(image, root / "bounding_box_test" / name, rng)
        counts["distractors"] += 1
    for index in range(round(junk_fraction * test_boxes)):
        rng = _rng(seed, _JUNK, index)
        camera_id = int(rng.integers(1, NUM_CAMERAS + 1))
        image = render_junk(seed, index, cameras[camera_id], rng)
        name = market_name(-1, camera_id, int(rng.integers(1, 7)), 7 * index + 4, int(rng.integers(1, 9)))
        _save(image, root / "bounding_box_test" / name, rng)
        counts["junk"] += 1
    counts["gallery_images"] += counts["distractors"] + counts["junk"]
    return counts


def render_distractor(seed: int, index: int, camera: Camera, rng: np.random.Generator) -> Image.Image:
    """A person outside the identity set, badly framed: too large, off-centre or cut by the box."""
    person = make_identity(seed, index, kind=_DISTRACTOR)
    x = int(rng.integers(0, camera.panorama.shape[1] - IMAGE_WIDTH))
    image = camera.panorama[:, x: x + IMAGE_WIDTH].copy()
    body_height = IMAGE_HEIGHT * rng.uniform(0.7, 1.6)
    draw_person(image, person, VIEWS[rng.integers(4)], IMAGE_WIDTH / 2 + rng.uniform(-20, 20),
                rng.uniform(0.75, 1.3) * IMAGE_HEIGHT, body_height, rng.uniform(-1, 1))
    return finish_image(image, camera, rng.uniform(0.85, 1.15), rng)


def render_junk(seed: int, index: int, camera: Camera, rng: np.random.Generator) -> Image.Image:
    """A false detection: background only, or a fragment of a body (legs, a shoulder)."""
    x = int(rng.integers(0, camera.panorama.shape[1] - IMAGE_WIDTH))
    image = camera.panorama[:, x: x + IMAGE_WIDTH].copy()
    if rng.random() < 0.5:
        person = make_identity(seed, index, kind=_JUNK)
        body_height = IMAGE_HEIGHT * rng.uniform(1.8, 3.0)
        draw_person(image, person, VIEWS[rng.integers(4)], IMAGE_WIDTH * rng.uniform(-0.2, 1.2),
                    rng.uniform(0.9, 2.0) * IMAGE_HEIGHT, body_height, rng.uniform(-1, 1))
    return finish_image(image, camera, rng.uniform(0.85, 1.15), rng)


def dataset_name(root: str | os.PathLike) -> str:
    """``"synthetic Market-1501"`` for a folder this generator wrote, ``"Market-1501"`` otherwise: every
    figure and table says which one it shows."""
    return "synthetic Market-1501" if (Path(root) / MARKER_FILE).is_file() else "Market-1501"


def ensure_synthetic_market(root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    """Return ``root``, first generating the default synthetic set there if it does not exist (one-line notice)."""
    root = Path(root)
    if not root.exists():
        print(f"No dataset at {root}: generating the synthetic Market-1501 there (default size, one time).",
              flush=True)
        generate_market(root)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("out", help="output folder (must not exist)")
    parser.add_argument("--ids", type=int, default=DEFAULTS["ids"], help="identities per split (train, test)")
    parser.add_argument("--images-per-id", type=int, default=DEFAULTS["images_per_id"],
                        help="mean boxes per identity (uniform in [K/2, 3K/2])")
    parser.add_argument("--distractor-fraction", type=float, default=DEFAULTS["distractor_fraction"],
                        help="distractor boxes (0000) per test-identity box")
    parser.add_argument("--junk-fraction", type=float, default=DEFAULTS["junk_fraction"],
                        help="junk boxes (-1) per test-identity box")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="random seed")
    args = parser.parse_args(argv)
    try:
        check_generator_arguments(args.ids, args.images_per_id, args.distractor_fraction, args.junk_fraction)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    if Path(args.out).exists():
        raise SystemExit(f"error: {args.out} already exists: choose a new folder")
    started = time.perf_counter()
    counts = generate_market(args.out, ids=args.ids, images_per_id=args.images_per_id,
                             distractor_fraction=args.distractor_fraction, junk_fraction=args.junk_fraction,
                             seed=args.seed, show_progress=sys.stdout.isatty())
    summary = ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in counts.items())
    print(f"{args.out}: {summary} ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
