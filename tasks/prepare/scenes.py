"""Digit scenes: scikit-learn's bundled handwritten digits drawn in colour on varied
backgrounds, at any size (96x96 RGB is the MLPerf Tiny Visual Wake Words shape). A
realistic workload with no download: each image is a gradient of two random colours
with low-frequency blotches and pixel noise, and one digit, scaled and placed at random,
in a colour that stands out from the background under it. Seeded: the same params give
the same images on every machine.

Detection scenes (:func:`detection_scenes`) are the same backgrounds with 1 to 5
smaller digits each, placed where they overlap little, and each digit's class and tight
box (around its ink, in the box format of :mod:`tasks.prepare.boxes`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.prepare.boxes import box_array

# The digit's height as a fraction of the image's, and its colour's least distance
# from the background under it (RGB in [0, 1]): visible, but not always easy.
GLYPH_SCALE = (0.55, 0.9)
MIN_CONTRAST = 0.6
NOISE_STD = 0.03
BLOTCH_GRID = 5  # low-frequency colour blotches: a BLOTCH_GRID^2 grid, upsampled

# Detection scenes: several digits share an image, so each is smaller (its padded square's
# side as a fraction of the image's shorter side).
DETECTION_GLYPH_SCALE = (0.2, 0.45)
OBJECTS_PER_IMAGE = (1, 5)  # the count is drawn per image, both ends included
# Two digits' boxes overlap at most this much (intersection over union), and no box is
# covered by another over more than MAX_COVER of its own area: IoU alone lets a small
# digit sit wholly inside a large one's box, hidden under its ink, and still be labelled.
MAX_IOU = 0.3
MAX_COVER = 0.5
PLACEMENT_TRIES = 50  # positions tried for a digit before it is left out of the image
# Glyph pixels fainter than this are not drawn at all: the box is tight around what is
# drawn, and a bilinear fringe of alpha 0.01 would widen it past anything visible.
INK_ALPHA = 0.2


def _upsampled(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A small HxWxC float grid resized bilinearly to ``size`` (height, width)."""
    from PIL import Image

    channels = [np.asarray(Image.fromarray(grid[..., c].astype(np.float32), mode="F")
                           .resize((size[1], size[0]), Image.Resampling.BILINEAR))
                for c in range(grid.shape[-1])]
    return np.stack(channels, axis=-1)


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    start, end = rng.random(3), rng.random(3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    along = (np.cos(angle) * xx + np.sin(angle) * yy)
    along = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    gradient = start + (end - start) * along[..., None]
    blotches = _upsampled(rng.uniform(-0.15, 0.15, (BLOTCH_GRID, BLOTCH_GRID, 3)), size)
    return np.clip(gradient + blotches, 0.0, 1.0)


def _glyph_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour at least :data:`MIN_CONTRAST` from ``under`` (the mean colour
    beneath the digit); the farthest of a few draws otherwise."""
    draws = rng.random((16, 3))
    distance = np.linalg.norm(draws - under, axis=1)
    good = np.flatnonzero(distance >= MIN_CONTRAST)
    return draws[good[0]] if good.size else draws[int(np.argmax(distance))]


def _glyph(digit: np.ndarray, side: int) -> np.ndarray:
    """``digit`` (8x8, values 0..16) as a side x side alpha mask in [0, 1]."""
    from PIL import Image

    return np.asarray(Image.fromarray(np.float32(digit / 16.0), mode="F")
                      .resize((side, side), Image.Resampling.BILINEAR)).clip(0.0, 1.0)


def _paint(scene: np.ndarray, alpha: np.ndarray, top: int, left: int,
           colour: np.ndarray) -> None:
    """Blend ``colour`` into ``scene`` (in place) through ``alpha`` placed at top, left."""
    height, width = alpha.shape
    region = scene[top:top + height, left:left + width]
    scene[top:top + height, left:left + width] = (region * (1 - alpha[..., None])
                                                  + colour * alpha[..., None])


def digit_scene(rng: np.random.Generator, digit: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One scene (HxWx3 float32 in [0, 1]) of ``digit`` (8x8, values 0..16)."""
    height, width = size
    scene = _background(rng, size)
    side = max(4, int(round(rng.uniform(*GLYPH_SCALE) * min(height, width))))
    glyph = _glyph(digit, side)
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    region = scene[top:top + side, left:left + side]
    colour = _glyph_colour(rng, region.reshape(-1, 3).mean(axis=0))
    _paint(scene, glyph, top, left, colour)
    scene += rng.normal(0.0, NOISE_STD, scene.shape)
    return np.clip(scene, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class DetectionScenes:
    """``images``: float32 (N, H, W, 3) in [0, 1]; ``boxes``: one (k, 5) array per image
    (class, x0, y0, x1, y1 normalised: :mod:`tasks.prepare.boxes`), in drawing order."""

    images: np.ndarray
    boxes: list[np.ndarray]


def _overlap_ok(box: tuple[int, int, int, int], other: tuple[int, int, int, int]) -> bool:
    """Whether two pixel boxes (x0, y0, x1, y1, end exclusive) overlap within
    :data:`MAX_IOU` and :data:`MAX_COVER`."""
    inter_w = min(box[2], other[2]) - max(box[0], other[0])
    inter_h = min(box[3], other[3]) - max(box[1], other[1])
    if inter_w <= 0 or inter_h <= 0:
        return True
    inter = inter_w * inter_h
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in (box, other)]
    return (inter / (sum(areas) - inter) <= MAX_IOU and inter / min(areas) <= MAX_COVER)


def detection_scene(rng: np.random.Generator, digits: np.ndarray, labels: np.ndarray,
                    size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One detection scene: (HxWx3 float32 in [0, 1], its (k, 5) box array).

    The object count is drawn from :data:`OBJECTS_PER_IMAGE`; each object is a digit
    drawn from ``digits`` (8x8, values 0..16; its class from ``labels``), scaled
    (:data:`DETECTION_GLYPH_SCALE`) and placed where its ink box keeps the overlap limits
    with those already placed. A digit that finds no such place in
    :data:`PLACEMENT_TRIES` draws is left out (the first always has room), so an image
    holds at least one and at most the drawn count."""
    height, width = size
    scene = _background(rng, size)
    count = int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))
    placed: list[tuple[int, int, int, int]] = []
    rows: list[tuple[float, float, float, float, float]] = []
    for _ in range(count):
        index = int(rng.integers(len(digits)))
        side = max(4, int(round(rng.uniform(*DETECTION_GLYPH_SCALE) * min(height, width))))
        glyph = _glyph(digits[index], side)
        glyph = np.where(glyph >= INK_ALPHA, glyph, 0.0)
        ink_rows, ink_cols = np.nonzero(glyph)
        if ink_rows.size == 0:  # nothing would be drawn: no object to label
            continue
        for _ in range(PLACEMENT_TRIES):
            top = int(rng.integers(0, height - side + 1))
            left = int(rng.integers(0, width - side + 1))
            box = (left + int(ink_cols.min()), top + int(ink_rows.min()),
                   left + int(ink_cols.max()) + 1, top + int(ink_rows.max()) + 1)
            if all(_overlap_ok(box, other) for other in placed):
                break
        else:
            continue
        under = scene[box[1]:box[3], box[0]:box[2]].reshape(-1, 3).mean(axis=0)
        _paint(scene, glyph, top, left, _glyph_colour(rng, under))
        placed.append(box)
        rows.append((float(labels[index]), box[0] / width, box[1] / height,
                     box[2] / width, box[3] / height))
    scene += rng.normal(0.0, NOISE_STD, scene.shape)
    return np.clip(scene, 0.0, 1.0).astype(np.float32), box_array(rows)


def detection_scenes(digits: np.ndarray, labels: np.ndarray, count: int,
                     size: tuple[int, int], seed: int) -> DetectionScenes:
    """``count`` detection scenes (:func:`detection_scene`) of ``size`` (height, width),
    all drawn from one generator seeded with ``seed``: the same arguments give the same
    images and boxes on every machine."""
    rng = np.random.default_rng(seed)
    drawn = [detection_scene(rng, digits, labels, size) for _ in range(count)]
    images = (np.stack([image for image, _ in drawn]) if drawn
              else np.zeros((0, *size, 3), np.float32))
    return DetectionScenes(images=images, boxes=[boxes for _, boxes in drawn])
