"""Digit scenes (the realistic workload's images): each digit drawn where it stands out,
the same images from the same seed, and what prepare makes of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.prepare import scenes
from tasks.config import DataParams
from tasks.core.contracts.prepared import load_split
from tasks.prepare import load_digit_scenes, prepare

EIGHT = np.zeros((8, 8))
EIGHT[1:7, 2:6] = 16.0  # a solid block: every glyph pixel is fully drawn


def test_the_digit_is_drawn_in_a_colour_that_stands_out_from_the_background_under_it() -> None:
    for seed in range(30):
        rng = np.random.default_rng(seed)
        scene = scenes.digit_scene(rng, EIGHT, (96, 80))
        assert scene.shape == (96, 80, 3) and scene.dtype == np.float32
        assert 0.0 <= scene.min() and scene.max() <= 1.0
        # Replay the draws without the glyph: the background, and where the digit went.
        replay = np.random.default_rng(seed)
        background = scenes._background(replay, (96, 80))
        side = max(4, int(round(replay.uniform(*scenes.GLYPH_SCALE) * 80)))
        top, left = replay.integers(0, 96 - side + 1), replay.integers(0, 80 - side + 1)
        low, high = scenes.GLYPH_SCALE
        assert low * 80 - 1 <= side <= high * 80 + 1
        inside = scene[top + side // 3:top + 2 * side // 3, left + side // 3:left + 2 * side // 3]
        under = background[top:top + side, left:left + side].reshape(-1, 3).mean(axis=0)
        # The glyph's core is one colour (plus pixel noise) far enough from the background.
        colour = inside.reshape(-1, 3).mean(axis=0)
        assert inside.reshape(-1, 3).std(axis=0).max() < 3 * scenes.NOISE_STD
        assert np.linalg.norm(colour - under) >= scenes.MIN_CONTRAST - 0.05


@pytest.fixture(scope="module")
def scene_params() -> DataParams:
    return DataParams(source="digit_scenes", image_size=(48, 40), color="rgb", seed=3)


def test_digit_scenes_are_the_digits_in_colour_at_the_size_asked_the_same_for_one_seed(
        scene_params: DataParams) -> None:
    from sklearn.datasets import load_digits

    loaded = load_digit_scenes(scene_params)
    assert loaded.x.shape == (1797, 48, 40, 3) and loaded.x.dtype == np.float32
    assert loaded.y.tolist() == load_digits().target.tolist()
    assert loaded.classes == [str(n) for n in range(10)]
    # Colour, not grey: the channels differ.
    assert np.abs(loaded.x[..., 0] - loaded.x[..., 1]).mean() > 0.05
    # 8-bit frames through the predictor's pre-processing: multiples of 1/255.
    assert np.allclose(loaded.x * 255, np.round(loaded.x * 255), atol=1e-3)
    again = load_digit_scenes(scene_params)
    assert np.array_equal(again.x, loaded.x)
    other = load_digit_scenes(scene_params.model_copy(update={"seed": 4}))
    assert not np.array_equal(other.x, loaded.x)


def test_prepare_writes_digit_scenes_as_grey_when_asked(tmp_path: Path) -> None:
    params = DataParams(source="digit_scenes", image_size=(24, 24), color="grayscale")
    prepare(params, tmp_path)
    x, y = load_split(tmp_path, "test")
    assert x.shape[1:] == (24, 24, 1) and len(x) == len(y) == 360


def test_one_seed_gives_these_exact_pixels() -> None:
    """The scenes are the data set: any change of the draws, their order or a constant
    (glyph scale, contrast, noise, blotch grid) changes every image and every model
    trained on them. Every fourth row and third column of a 12x10 scene of seed 0."""
    scene = scenes.digit_scene(np.random.default_rng(0), EIGHT, (12, 10))
    np.testing.assert_allclose(scene[::4, ::3], [
        [[0.054482, 0.795068, 1.0], [0.086724, 0.663433, 0.831400],
         [0.270133, 0.631636, 0.580501], [0.317562, 0.392471, 0.321566]],
        [[0.166692, 0.798530, 0.761271], [0.201482, 0.753276, 0.683425],
         [0.926486, 0.072438, 0.704193], [0.485945, 0.414320, 0.243322]],
        [[0.376614, 0.501158, 0.536959], [0.258243, 0.522752, 0.476805],
         [0.348215, 0.288799, 0.331035], [0.543168, 0.362512, 0.082394]]], atol=2e-5)
    assert float(scene.sum()) == pytest.approx(172.0546875, abs=1e-3)


class _Draws:
    """A generator whose ``random`` gives these 16 colours."""

    def __init__(self, colours: list[list[float]]) -> None:
        self.colours = np.array(colours + [[0.5, 0.5, 0.5]] * (16 - len(colours)))

    def random(self, shape: tuple[int, int]) -> np.ndarray:
        assert shape == (16, 3)
        return self.colours


def test_the_glyph_colour_is_the_first_draw_far_enough_else_the_farthest() -> None:
    # Distances from black: 0.3, exactly MIN_CONTRAST 0.6, 0.7; the first far enough wins.
    colours = [[0.3, 0.0, 0.0], [0.0, 0.6, 0.0], [0.0, 0.0, 0.7]]
    assert scenes._glyph_colour(_Draws(colours), np.zeros(3)).tolist() == [0.0, 0.6, 0.0]
    under = np.array([0.5, 0.5, 0.5])
    # None far enough: the farthest of the draws (0.4 beats 0.3 and 0.1).
    near = [[0.8, 0.5, 0.5], [0.5, 0.1, 0.5], [0.5, 0.5, 0.6]]
    assert scenes._glyph_colour(_Draws(near), under).tolist() == [0.5, 0.1, 0.5]


# Detection scenes: several digits per image, each with its class and tight box.

DETECTION_SIZE = (48, 56)  # not square: a box with x and y swapped does not fit it


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    loaded = load_digits()
    return loaded.images, loaded.target


def _ink_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Draw every digit white on black with no noise: a pixel's value is then the ink
    drawn there and a pixel with no ink is exactly 0."""
    monkeypatch.setattr(scenes, "_background", lambda rng, size: np.zeros((*size, 3)))
    monkeypatch.setattr(scenes, "_glyph_colour", lambda rng, under: np.ones(3))
    monkeypatch.setattr(scenes, "NOISE_STD", 0.0)


def _pixel_boxes(boxes: np.ndarray, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The normalised corners back in pixels (x0, y0, x1, y1, end exclusive): whole
    numbers, since a box is drawn around whole pixels."""
    height, width = size
    scaled = boxes[:, 1:] * [width, height, width, height]
    assert np.allclose(scaled, np.round(scaled), atol=1e-9)
    return [tuple(int(v) for v in row) for row in np.round(scaled)]


def test_detection_scenes_are_the_same_for_one_seed_and_differ_for_another(digits) -> None:
    first = scenes.detection_scenes(*digits, count=12, size=DETECTION_SIZE, seed=5)
    again = scenes.detection_scenes(*digits, count=12, size=DETECTION_SIZE, seed=5)
    other = scenes.detection_scenes(*digits, count=12, size=DETECTION_SIZE, seed=6)
    assert first.images.shape == (12, 48, 56, 3) and first.images.dtype == np.float32
    assert 0.0 <= first.images.min() and first.images.max() <= 1.0
    assert np.array_equal(first.images, again.images)
    assert all(np.array_equal(a, b) for a, b in zip(first.boxes, again.boxes, strict=True))
    assert not np.array_equal(first.images, other.images)
    assert any(a.shape != b.shape or not np.array_equal(a, b)
               for a, b in zip(first.boxes, other.boxes, strict=True))


def test_one_seed_gives_these_exact_detection_scenes(digits) -> None:
    """The scenes are the data set: any change of the draws, their order or a constant
    (scale, overlap limits, ink threshold) changes the images, the boxes and every model
    trained on them. Boxes in pixels of a 48x56 image for seed 0."""
    made = scenes.detection_scenes(*digits, count=3, size=DETECTION_SIZE, seed=0)
    assert [boxes[:, 0].tolist() for boxes in made.boxes] == [[5.0, 5.0, 6.0], [1.0, 2.0], [3.0]]
    assert [_pixel_boxes(boxes, DETECTION_SIZE) for boxes in made.boxes] == [
        [(18, 2, 32, 21), (21, 20, 30, 33), (9, 25, 22, 43)],
        [(36, 18, 41, 29), (18, 23, 28, 35)],
        [(30, 4, 46, 24)]]
    assert made.boxes[2].tolist() == [[3.0, 30 / 56, 4 / 48, 46 / 56, 24 / 48]]
    assert float(made.images.sum()) == pytest.approx(9855.34, abs=1e-2)


def test_each_image_holds_one_to_five_digits_with_the_class_of_the_digit_drawn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Two kinds of digit whose boxes tell them apart: class 3 a full square block, class 7
    # a bar two columns wide and the full height (at least twice as tall as wide).
    block, bar = np.full((8, 8), 16.0), np.zeros((8, 8))
    bar[:, 3:5] = 16.0
    _ink_only(monkeypatch)
    made = scenes.detection_scenes(np.stack([block, bar]), np.array([3, 7]), count=200,
                                   size=DETECTION_SIZE, seed=1)
    counts = [len(boxes) for boxes in made.boxes]
    assert min(counts) >= 1 and max(counts) <= 5
    assert set(counts) == {1, 2, 3, 4, 5}  # drawn per image, not one count for all
    kinds = {3: 0, 7: 0}
    for boxes in made.boxes:
        for label, (x0, y0, x1, y1) in zip(boxes[:, 0], _pixel_boxes(boxes, DETECTION_SIZE)):
            ratio = (y1 - y0) / (x1 - x0)
            assert (ratio == 1.0) if label == 3 else (label == 7 and ratio >= 2.0), (label, ratio)
            kinds[int(label)] += 1
    assert min(kinds.values()) > 100


def test_boxes_are_tight_around_the_ink_and_nothing_is_drawn_outside_them(
        digits, monkeypatch: pytest.MonkeyPatch) -> None:
    _ink_only(monkeypatch)
    made = scenes.detection_scenes(*digits, count=150, size=DETECTION_SIZE, seed=2)
    singles = 0
    for image, boxes in zip(made.images, made.boxes, strict=True):
        ink = image[..., 0]
        assert np.array_equal(image[..., 1], ink) and np.array_equal(image[..., 2], ink)
        inside = np.zeros(ink.shape, bool)
        for x0, y0, x1, y1 in _pixel_boxes(boxes, DETECTION_SIZE):
            assert 0 <= x0 < x1 <= DETECTION_SIZE[1] and 0 <= y0 < y1 <= DETECTION_SIZE[0]
            inside[y0:y1, x0:x1] = True
            # Each edge of the box runs through drawn ink (not a faint fringe): no
            # box is wider than its digit (a padded square, an extra pixel).
            for edge in (ink[y0, x0:x1], ink[y1 - 1, x0:x1], ink[y0:y1, x0], ink[y0:y1, x1 - 1]):
                assert edge.max() >= scenes.INK_ALPHA
        # Nothing drawn outside every box: no box is narrower than its digit.
        assert not ink[~inside].any()
        if len(boxes) == 1:  # alone, the box is exactly the drawn pixels' extent
            singles += 1
            rows, cols = np.nonzero(ink)
            assert _pixel_boxes(boxes, DETECTION_SIZE) == [
                (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)]
    assert singles >= 10


def _iou_and_cover(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[float, float]:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter), inter / min(area_a, area_b)


def test_digits_overlap_within_the_limits_and_do_overlap(digits) -> None:
    made = scenes.detection_scenes(*digits, count=300, size=DETECTION_SIZE, seed=3)
    ious = []
    for boxes in made.boxes:
        pixels = _pixel_boxes(boxes, DETECTION_SIZE)
        for i, a in enumerate(pixels):
            for b in pixels[i + 1:]:
                iou, cover = _iou_and_cover(a, b)
                assert iou <= scenes.MAX_IOU and cover <= scenes.MAX_COVER, (a, b)
                ious.append(iou)
    # The limits are reached for, not met by keeping digits apart.
    assert max(ious) > 0.2 and sum(iou > 0 for iou in ious) > 50
