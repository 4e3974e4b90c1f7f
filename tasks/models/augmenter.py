"""Training-image augmentation in NumPy: flips, shifts, rotations, brightness, contrast.

Done outside the model on purpose: random layers inside a Keras model would travel into
every exported artifact (and some converters refuse them). Each transform is seeded from
the generator it is given, so a training run is reproducible: the same seed and epoch
give the same images. Images are float32 NHWC in [0, 1] and stay in that range. The
options are :class:`tasks.models.augment.AugmentationParams`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tasks.models.augment import AugmentationParams

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]

_FLIP_AXES = {"none": (), "horizontal": (2,), "vertical": (1,), "both": (1, 2)}


def _flip(axes: tuple[int, ...]) -> Transform:
    def flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for axis in axes:  # each image flips (or not) on its own, with probability 1/2
            chosen = rng.random(len(images)) < 0.5
            images[chosen] = np.flip(images[chosen], axis=axis)
        return images
    return flip


def _geometry(shift: float, rotation_degrees: float) -> Transform:
    def move(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy.ndimage import affine_transform

        _, height, width, _ = images.shape
        centre = np.array([(height - 1) / 2, (width - 1) / 2])
        for index in range(len(images)):
            angle = np.deg2rad(rng.uniform(-rotation_degrees, rotation_degrees))
            offset_pixels = rng.uniform(-shift, shift, size=2) * (height, width)
            cos, sin = np.cos(angle), np.sin(angle)
            rotation = np.array([[cos, -sin], [sin, cos]])
            # affine_transform maps each output pixel to where it is read in the input.
            origin = centre - rotation @ (centre + offset_pixels)
            for channel in range(images.shape[-1]):
                images[index, :, :, channel] = affine_transform(
                    images[index, :, :, channel], rotation, offset=origin, order=1,
                    mode="nearest")
        return images
    return move


def _brightness(limit: float) -> Transform:
    def brighten(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        images += rng.uniform(-limit, limit, size=(len(images), 1, 1, 1)).astype(np.float32)
        return images
    return brighten


def _contrast(limit: float) -> Transform:
    def stretch(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        factors = rng.uniform(1 - limit, 1 + limit, size=(len(images), 1, 1, 1))
        means = images.mean(axis=(1, 2), keepdims=True)
        return ((images - means) * factors + means).astype(np.float32)
    return stretch


@dataclass(frozen=True)
class Augmenter:
    """The enabled transforms of one :class:`AugmentationParams`, applied in order."""

    transforms: tuple[Transform, ...]

    @property
    def enabled(self) -> bool:
        return bool(self.transforms)

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A changed copy of ``images`` (the input is left as it was), clipped to [0, 1]."""
        if not self.transforms:
            return images
        changed = np.array(images, dtype=np.float32, copy=True)
        for transform in self.transforms:
            changed = transform(changed, rng)
        return np.clip(changed, 0.0, 1.0, out=changed)


def augmenter(params: AugmentationParams) -> Augmenter:
    """The transforms ``params`` switches on (a value of 0 or ``none`` is off)."""
    transforms: list[Transform] = []
    if _FLIP_AXES[params.flip]:
        transforms.append(_flip(_FLIP_AXES[params.flip]))
    if params.shift or params.rotation_degrees:
        transforms.append(_geometry(params.shift, params.rotation_degrees))
    if params.brightness:
        transforms.append(_brightness(params.brightness))
    if params.contrast:
        transforms.append(_contrast(params.contrast))
    return Augmenter(tuple(transforms))
