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


@pytest.mark.parametrize("size, geometry", [
    ((40, 10), (1.0, 4 / 16, 0.0, 6 / 16)),      # 16x4 picture, 6 rows above
    ((30, 10), (1.0, 5 / 16, 0.0, 5 / 16)),      # odd padding: 5 above, 6 below
    ((10, 30), (5 / 16, 1.0, 5 / 16, 0.0)),      # tall: 5 columns left
    ((8, 8), (1.0, 1.0, 0.0, 0.0)),              # the model's aspect: no border
])
def test_fit_geometry_is_where_the_letterboxed_pixels_land(
        size: tuple[int, int], geometry: tuple[float, ...]) -> None:
    """Hand-computed for a 16x16 input, and the very rows and columns the white picture
    covers in the pre-processed input: boxes move with the pixels."""
    assert preprocess.fit_geometry(*size, 16, 16, "letterbox") == geometry
    x = preprocess.to_model_input(white(*size), 16, 16, "grayscale", "letterbox")[..., 0]
    rows, cols = np.nonzero(x)
    scale_x, scale_y, offset_x, offset_y = geometry
    assert (cols.min() / 16, rows.min() / 16) == (offset_x, offset_y)
    assert ((cols.max() + 1) / 16, (rows.max() + 1) / 16) == (offset_x + scale_x,
                                                              offset_y + scale_y)


def test_fit_geometry_of_squash_is_the_identity_and_a_bad_fit_is_named() -> None:
    assert preprocess.fit_geometry(40, 10, 16, 16, "squash") == (1.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"fit is one of squash, letterbox, letterbox_grey, not 'crop'"):
        preprocess.fit_geometry(40, 10, 16, 16, "crop")


def test_an_unknown_fit_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"fit is one of squash, letterbox, letterbox_grey, not 'crop'"):
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


def test_float_arrays_become_8_bit_rounded_to_nearest() -> None:
    """x * 255 rounded (half to even), not truncated: 0.5 -> 127.5 -> 128, 0.999 -> 255."""
    grey = np.array([[0.0, 0.5, 0.999, 1.0, 0.002]], np.float64)
    image = preprocess.image_from_array(grey)
    assert image.mode == "L" and image.size == (5, 1)
    assert list(image.getdata()) == [0, 128, 255, 255, 1]
    rgba = np.full((1, 1, 4), 0.2, np.float32)
    assert preprocess.image_from_array(rgba).getpixel((0, 0)) == (51, 51, 51, 51)
    assert preprocess.image_from_array(np.zeros((2, 3, 1), np.uint8)).mode == "L"


@pytest.mark.parametrize("values", [[-0.01, 0.5], [0.5, 1.01], [0.5, np.nan], [0.5, np.inf]])
def test_float_arrays_outside_zero_to_one_are_refused(values: list[float]) -> None:
    with pytest.raises(preprocess.ImageError) as refused:
        preprocess.image_from_array(np.array([values], np.float32))
    assert str(refused.value) == ("an image array is uint8, or float in [0, 1]; not float32 "
                                  "with these values")


@pytest.mark.parametrize("array", [np.zeros((2, 2, 3), np.int32), np.zeros((2, 2), np.uint16),
                                   np.zeros((2, 2), bool)])
def test_integer_arrays_other_than_uint8_are_refused(array: np.ndarray) -> None:
    with pytest.raises(preprocess.ImageError, match=f"not {array.dtype} with these values"):
        preprocess.image_from_array(array)


@pytest.mark.parametrize("shape", [(4,), (2, 2, 2), (2, 2, 5), (0, 3, 3), (3, 0), (1, 2, 2, 3)])
def test_arrays_of_other_shapes_are_refused_naming_the_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(preprocess.ImageError) as refused:
        preprocess.image_from_array(np.zeros(shape, np.uint8))
    shown = shape + (1,) if len(shape) == 2 else shape
    assert str(refused.value) == ("an image array is (height, width) or (height, width, 1, 3 "
                                  f"or 4 channels), not {shown}")


def test_decode_image_gives_the_loaded_image_or_says_why_not() -> None:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (9, 8, 7)).save(buffer, "PNG")
    image = preprocess.decode_image(buffer.getvalue())
    assert image.size == (3, 2) and image.getpixel((2, 1)) == (9, 8, 7)
    with pytest.raises(preprocess.ImageError) as refused:
        preprocess.decode_image(b"not an image at all")
    assert str(refused.value).startswith("not an image: cannot identify image file")
    # Truncated half way through its pixels: the header opens, the pixels do not load.
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8)).save(
        noise, "PNG")
    with pytest.raises(preprocess.ImageError, match="^not an image: image file is truncated"):
        preprocess.decode_image(noise.getvalue()[:len(noise.getvalue()) // 2])


def test_a_decompression_bomb_is_refused_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    buffer = io.BytesIO()
    Image.new("L", (40, 40)).save(buffer, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 1600 pixels: over the limit
    with pytest.raises(preprocess.ImageError, match="^not decoded: Image size"):
        preprocess.decode_image(buffer.getvalue())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # over the limit, under twice it
    with pytest.raises(preprocess.ImageError, match="^not decoded: Image size"):
        preprocess.decode_image(buffer.getvalue())


def test_32_bit_grey_is_scaled_by_its_own_peak_and_16_bit_by_65535() -> None:
    wide = Image.fromarray(np.array([[0, 1000, 4000]], np.int32), "I")
    assert preprocess.to_model_input(wide, 1, 3, "grayscale").reshape(-1).tolist() == pytest.approx(
        [0.0, 64 / 255, 1.0])  # 1000/4000*255 + 0.5 = 64.25 -> 64
    deep = Image.new("I;16", (3, 1))
    deep.putdata([0, 32768, 65535])
    assert preprocess.to_model_input(deep, 1, 3, "grayscale").reshape(-1).tolist() == pytest.approx(
        [0.0, 128 / 255, 1.0])
    black = Image.fromarray(np.zeros((1, 2), np.int32), "I")  # peak 0: no division by it
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert preprocess.to_model_input(black, 1, 2, "rgb").tolist() == [[[0.0] * 3] * 2]


def test_the_model_input_is_float32_in_zero_to_one_with_the_modes_channels() -> None:
    colour = Image.new("RGB", (2, 2), (255, 0, 51))
    rgb = preprocess.to_model_input(colour, 2, 2, "rgb")
    assert rgb.dtype == np.float32 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])
    grey = preprocess.to_model_input(colour, 3, 2, "grayscale")
    assert grey.shape == (3, 2, 1)  # (height, width, 1)
    assert grey[0, 0, 0] == pytest.approx(round(255 * 0.299 + 51 * 0.114) / 255)


# --- boxes back in the image's pixels ---------------------------------------------------


def test_boxes_in_image_inverts_a_letterbox_exactly() -> None:
    """A 40 x 20 image letterboxed into 32 x 32 is scaled by 0.8 to 32 x 16 at rows 8..24:
    fractions (scale 1, 0.5; offset 0, 0.25). The picture's own extent is the whole image;
    [0.25, 0.5, 0.75, 0.75] is x 0.25 * 40, y (0.5 - 0.25) / 0.5 * 20 ... by hand."""
    assert preprocess.boxes_in_image([0.0, 0.25, 1.0, 0.75], 40, 20, 32, 32,
                                     "letterbox").tolist() == [0.0, 0.0, 40.0, 20.0]
    assert preprocess.boxes_in_image([0.25, 0.5, 0.75, 0.75], 40, 20, 32, 32,
                                     "letterbox").tolist() == [10.0, 10.0, 30.0, 20.0]
    # Tall, 20 x 40: columns 8..24 (scale 0.5, offset 0.25), rows all.
    assert preprocess.boxes_in_image([0.5, 0.5, 0.75, 1.0], 20, 40, 32, 32,
                                     "letterbox").tolist() == [10.0, 20.0, 20.0, 40.0]


def test_boxes_in_image_of_squash_scale_by_the_images_size() -> None:
    assert preprocess.boxes_in_image([[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 1.0, 1.0]], 64, 48, 32, 32,
                                     "squash").tolist() == [[6.4, 9.6, 19.2, 19.2],
                                                            [0.0, 0.0, 64.0, 48.0]]


def test_boxes_in_image_are_clipped_to_the_picture_and_rounded_to_a_tenth() -> None:
    """Over the letterbox's border, a box ends at the picture's edge (never a negative
    pixel, never past the image); a third of 10 px is 3.3; no box is no box."""
    assert preprocess.boxes_in_image([0.0, 0.1, 0.5, 0.9], 40, 20, 32, 32,
                                     "letterbox").tolist() == [0.0, 0.0, 20.0, 20.0]
    assert preprocess.boxes_in_image([1 / 3, 0.0, 2 / 3, 1 / 3], 10, 10, 8, 8,
                                     "squash").tolist() == [3.3, 0.0, 6.7, 3.3]
    assert preprocess.boxes_in_image(np.zeros((0, 4)), 10, 10, 8, 8, "squash").shape == (0, 4)


def test_boxes_in_image_undo_what_fit_geometry_does_to_a_box() -> None:
    """A box in an image's pixels, carried into the model's input by fit_geometry (as
    prepare carries labels), comes back to the same pixels."""
    for size in ((40, 20), (20, 40), (37, 23), (16, 16)):
        scale_x, scale_y, offset_x, offset_y = preprocess.fit_geometry(*size, 16, 16, "letterbox")
        pixels = np.array([0.2 * size[0], 0.3 * size[1], 0.9 * size[0], 0.8 * size[1]])
        fractions = (pixels / np.array([*size, *size]) * np.array([scale_x, scale_y] * 2)
                     + np.array([offset_x, offset_y] * 2))
        back = preprocess.boxes_in_image(fractions, *size, 16, 16, "letterbox")
        np.testing.assert_allclose(back, np.round(pixels, 1), atol=1e-9)


def test_upright_applies_the_exif_rotation_and_leaves_an_upright_image_itself() -> None:
    from PIL import ExifTags

    sideways = Image.new("L", (4, 6))
    sideways.getexif()[ExifTags.Base.Orientation] = 6
    assert preprocess.upright(sideways).size == (6, 4)
    plain = white(4, 6)
    assert preprocess.upright(plain) is plain


def test_letterbox_grey_pads_with_ultralytics_grey_where_letterbox_pads_black() -> None:
    """Ultralytics YOLO's letterbox: the same geometry, borders of 114 in every channel."""
    picture = Image.new("RGB", (40, 10), (255, 0, 255))
    grey = preprocess.to_model_input(picture, 16, 16, "rgb", "letterbox_grey")
    black = preprocess.to_model_input(picture, 16, 16, "rgb", "letterbox")
    np.testing.assert_array_equal(grey[:6], np.float32(114 / 255))
    np.testing.assert_array_equal(grey[10:], np.float32(114 / 255))
    np.testing.assert_array_equal(black[:6], 0.0)
    np.testing.assert_array_equal(grey[6:10], black[6:10])  # the picture itself: unchanged
    np.testing.assert_array_equal(grey[6:10, :, 1], 0.0)
    grey_l = preprocess.to_model_input(white(10, 40), 16, 16, "grayscale", "letterbox_grey")[..., 0]
    np.testing.assert_array_equal(grey_l[:, :6], np.float32(114 / 255))
    np.testing.assert_array_equal(grey_l[:, 6:10], 1.0)
    assert preprocess.fit_geometry(40, 10, 16, 16, "letterbox_grey") == \
        preprocess.fit_geometry(40, 10, 16, 16, "letterbox")
