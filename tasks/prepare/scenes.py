"""Digit scenes: scikit-learn's bundled handwritten digits drawn in colour on varied
backgrounds, at any size (96x96 RGB is the MLPerf Tiny Visual Wake Words shape). A
realistic workload with no download: each image is a gradient of two random colours
with low-frequency blotches and pixel noise, and one digit, scaled and placed at random,
in a colour that stands out from the background under it. Seeded: the same params give
the same images on every machine."""

from __future__ import annotations

import numpy as np

# The digit's height as a fraction of the image's, and its colour's least distance
# from the background under it (RGB in [0, 1]): visible, but not always easy.
GLYPH_SCALE = (0.55, 0.9)
MIN_CONTRAST = 0.6
NOISE_STD = 0.03
BLOTCH_GRID = 5  # low-frequency colour blotches: a BLOTCH_GRID^2 grid, upsampled


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
