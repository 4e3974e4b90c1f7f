"""The pre-processing every image goes through (tasks/device/preprocess.py): how an image
of another aspect ratio reaches the model's size (squash or letterbox), and the channel
order of arrays an application hands over (RGB, or OpenCV's BGR)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tasks.core import device_code

preprocess = device_code.preprocess()


def white(width: int, height: int) -> Image.Image:
    return Image.new("L", (width, height), 255)


def test_squash_stretches_a_wide_image_over_the_whole_input() -> None:
    x = preprocess.to_model_input(white(40, 10), 16, 16, "grayscale", "squash")
    assert x.shape == (16, 16, 1)
    np.testing.assert_array_equal(x, 1.0)


def test_squash_is_the_default() -> None:
    np.testing.assert_array_equal(preprocess.to_model_input(white(40, 10), 16, 16, "grayscale"),
                                  preprocess.to_model_input(white(40, 10), 16, 16, "grayscale",
                                                            "squash"))


def test_letterbox_keeps_the_aspect_ratio_and_pads_with_black() -> None:
    """A 4:1 image in a 16x16 input: scaled to 16x4, centred, black above and below."""
    x = preprocess.to_model_input(white(40, 10), 16, 16, "grayscale", "letterbox")[..., 0]
    row_means = x.mean(axis=1)
    np.testing.assert_array_equal(row_means[:6], 0.0)
    np.testing.assert_array_equal(row_means[6:10], 1.0)
    np.testing.assert_array_equal(row_means[10:], 0.0)


def test_letterbox_with_odd_padding_puts_the_extra_line_below_and_right() -> None:
    """A 3:1 image in a 16x16 input: scaled to 16x5, 11 rows of padding, 5 above and 6
    below; its 1:3 twin: 5 columns, 5 left and 6 right."""
    wide = preprocess.to_model_input(white(30, 10), 16, 16, "grayscale", "letterbox")[..., 0]
    np.testing.assert_array_equal(wide.mean(axis=1), [0.0] * 5 + [1.0] * 5 + [0.0] * 6)
    tall = preprocess.to_model_input(white(10, 30), 16, 16, "grayscale", "letterbox")[..., 0]
    np.testing.assert_array_equal(tall.mean(axis=0), [0.0] * 5 + [1.0] * 5 + [0.0] * 6)


def test_letterbox_of_a_tall_image_pads_left_and_right_in_colour() -> None:
    red = Image.new("RGB", (5, 20), (255, 0, 0))
    x = preprocess.to_model_input(red, 8, 8, "rgb", "letterbox")
    np.testing.assert_array_equal(x[:, :3], 0.0)
    np.testing.assert_array_equal(x[:, 5:], 0.0)
    np.testing.assert_array_equal(x[:, 3:5], np.broadcast_to([1.0, 0.0, 0.0], (8, 2, 3)))


def test_letterbox_of_an_image_of_the_model_aspect_is_a_plain_resize() -> None:
    image = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, "L")
    np.testing.assert_array_equal(preprocess.to_model_input(image, 16, 16, "grayscale",
                                                            "letterbox"),
                                  preprocess.to_model_input(image, 16, 16, "grayscale",
                                                            "squash"))


def test_an_unknown_fit_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"fit is one of squash, letterbox, not 'crop'"):
        preprocess.to_model_input(white(4, 4), 8, 8, "grayscale", "crop")


def test_a_bgr_array_is_read_as_the_same_image_as_its_rgb_twin() -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 10  # orange
    bgr = rgb[..., ::-1].copy()
    assert preprocess.image_from_array(bgr, "bgr").getpixel((0, 0)) == (200, 100, 10)
    assert preprocess.image_from_array(rgb).getpixel((0, 0)) == (200, 100, 10)
    # Read as RGB, the BGR array is another colour: the order matters.
    assert preprocess.image_from_array(bgr).getpixel((0, 0)) == (10, 100, 200)


def test_a_bgra_array_keeps_its_alpha_last() -> None:
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[...] = (1, 2, 3, 77)
    assert preprocess.image_from_array(bgra, "bgr").getpixel((0, 0)) == (3, 2, 1, 77)


def test_grey_arrays_ignore_the_channel_order() -> None:
    grey = np.full((3, 3), 9, np.uint8)
    assert preprocess.image_from_array(grey, "bgr").getpixel((0, 0)) == 9


def test_an_unknown_channel_order_names_the_allowed_ones() -> None:
    with pytest.raises(preprocess.ImageError, match=r"channels is one of rgb, bgr, not 'rbg'"):
        preprocess.image_from_array(np.zeros((2, 2, 3), np.uint8), "rbg")
