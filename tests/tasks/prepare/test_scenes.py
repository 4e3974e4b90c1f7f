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
