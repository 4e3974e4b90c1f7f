"""Training-image augmentation: each transform does what its parameter says, nothing
else, reproducibly, and never leaves [0, 1] or touches its input."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.models.augment import AugmentationParams
from tasks.models.augmenter import augmenter


def _gradient_images(count: int = 64, size: int = 16) -> np.ndarray:
    # Every pixel different, so a flip or a shift is visible and identifiable.
    ramp = np.arange(size * size, dtype=np.float32).reshape(size, size) / (size * size)
    return np.repeat(ramp[np.newaxis, :, :, np.newaxis], count, axis=0)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_nothing_is_switched_on_by_default() -> None:
    augment = augmenter(AugmentationParams())
    images = _gradient_images()
    assert not augment.enabled
    assert augment(images, _rng()) is images


@pytest.mark.parametrize("flip, axes", [("horizontal", (2,)), ("vertical", (1,))])
def test_a_flip_mirrors_some_images_along_its_axis_only(flip: str, axes: tuple[int, ...]) -> None:
    images = _gradient_images()
    out = augmenter(AugmentationParams(flip=flip))(images, _rng())
    mirrored = [np.array_equal(o, np.flip(i, axis=axes[0] - 1)) for o, i in zip(out, images)]
    unchanged = [np.array_equal(o, i) for o, i in zip(out, images)]
    assert all(m or u for m, u in zip(mirrored, unchanged))
    assert 16 < sum(mirrored) < 48  # about half of 64


def test_both_flips_can_turn_an_image_upside_down_and_back_to_front() -> None:
    images = _gradient_images()
    out = augmenter(AugmentationParams(flip="both"))(images, _rng())
    assert any(np.array_equal(o, i[::-1, ::-1]) for o, i in zip(out, images))


def _dot_images(count: int = 32, size: int = 21) -> np.ndarray:
    images = np.zeros((count, size, size, 1), np.float32)
    images[:, size // 2, size // 2, 0] = 1.0
    return images


def _centre_of_mass(image: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(image.shape[:2])
    weight = image[..., 0].sum()
    return np.array([(rows * image[..., 0]).sum(), (cols * image[..., 0]).sum()]) / weight


def test_a_shift_moves_each_image_at_most_its_fraction() -> None:
    images = _dot_images()
    out = augmenter(AugmentationParams(shift=0.2))(images, _rng())
    moves = np.array([_centre_of_mass(o) - _centre_of_mass(i) for o, i in zip(out, images)])
    assert np.abs(moves).max() <= 0.2 * 21 + 1e-6
    assert np.abs(moves).max() > 1.0  # they did move


def test_a_rotation_turns_about_the_centre_within_its_angle() -> None:
    size = 21
    bar = np.zeros((size, size, 1), np.float32)
    bar[size // 2, 2:-2, 0] = 1.0  # a horizontal bar through the centre
    images = np.repeat(bar[np.newaxis], 32, axis=0)
    out = augmenter(AugmentationParams(rotation_degrees=30))(images, _rng())
    angles = []
    for image in out:
        rows, cols = np.nonzero(image[..., 0] > 0.3)
        angles.append(np.degrees(np.arctan2(-(rows - size // 2) @ (cols - size // 2),
                                            (cols - size // 2) @ (cols - size // 2))))
        np.testing.assert_allclose(_centre_of_mass(image), [size // 2, size // 2], atol=0.6)
    assert max(np.abs(angles)) <= 30 + 3 and max(np.abs(angles)) > 10


def test_brightness_adds_one_offset_per_image_within_its_limit() -> None:
    images = np.full((40, 4, 4, 3), 0.5, np.float32)
    out = augmenter(AugmentationParams(brightness=0.2))(images, _rng())
    offsets = (out - images).reshape(40, -1)
    np.testing.assert_allclose(offsets, offsets[:, :1].repeat(48, axis=1), atol=1e-6)
    assert np.abs(offsets).max() <= 0.2 + 1e-6 and np.ptp(offsets[:, 0]) > 0.1


def test_contrast_scales_the_spread_about_each_image_mean() -> None:
    images = np.tile(np.linspace(0.3, 0.7, 16, dtype=np.float32).reshape(1, 4, 4, 1), (40, 1, 1, 1))
    out = augmenter(AugmentationParams(contrast=0.5))(images, _rng())
    ratios = out.std(axis=(1, 2, 3)) / images.std(axis=(1, 2, 3))
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0.5, atol=1e-6)
    assert ratios.min() >= 0.5 - 1e-5 and ratios.max() <= 1.5 + 1e-5 and np.ptp(ratios) > 0.3


def test_results_stay_in_range_input_is_kept_and_the_seed_decides() -> None:
    params = AugmentationParams(flip="horizontal", shift=0.1, rotation_degrees=15,
                                brightness=0.9, contrast=0.9)
    images = _gradient_images()
    copy = images.copy()
    first = augmenter(params)(images, _rng(3))
    assert first.min() >= 0.0 and first.max() <= 1.0 and first.dtype == np.float32
    np.testing.assert_array_equal(images, copy)
    np.testing.assert_array_equal(first, augmenter(params)(images, _rng(3)))
    assert not np.array_equal(first, augmenter(params)(images, _rng(4)))


def test_rgb_channels_move_together() -> None:
    images = np.repeat(_dot_images(8), 3, axis=3)
    out = augmenter(AugmentationParams(shift=0.2, rotation_degrees=20))(images, _rng())
    np.testing.assert_allclose(out[..., 0], out[..., 2])
