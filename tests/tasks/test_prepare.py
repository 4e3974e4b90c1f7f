"""The prepare step on tiny data: digits (bundled, no download) and a folder tree of
PNG/JPEG images built here with Pillow. No TensorFlow/Keras is imported here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.config import DataParams, SplitParams
from tasks.core.contracts.prepared import SPLITS, load_split
from tasks.core.errors import DataError
from tasks.core.files import sha256_file
from tasks.prepare import prepare

DIGITS_TOTAL = 1797


def read_meta(out_dir: Path) -> dict:
    return json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))


def read_all(out_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {name: load_split(out_dir, name) for name in SPLITS}


def rows(x: np.ndarray, y: np.ndarray) -> list[bytes]:
    """One hashable key per sample: its pixels and its label."""
    return [xi.tobytes() + int(yi).to_bytes(8, "little") for xi, yi in zip(x, y)]


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("digits") / "prepared"
    assert prepare(DataParams(source="digits", image_size=(16, 16)), out_dir) == out_dir
    return out_dir


def test_digits_writes_every_split_and_meta(digits_out: Path) -> None:
    assert sorted(p.name for p in digits_out.iterdir()) == [
        "calib.npz", "meta.json", "test.npz", "train.npz", "val.npz"]
    meta = read_meta(digits_out)
    assert meta["classes"] == [str(d) for d in range(10)]
    assert meta["input_shape"] == [16, 16, 1]
    assert meta["color"] == "grayscale"
    assert meta["seed"] == 42
    assert meta["skipped_count"] == 0 and meta["skipped"] == []
    assert sum(meta["per_class"].values()) == DIGITS_TOTAL
    for name in SPLITS:
        assert meta["sha256"][name] == sha256_file(digits_out / f"{name}.npz")
    # no staging or backup folder left beside the output
    assert [p.name for p in digits_out.parent.iterdir()] == ["prepared"]


def test_digits_arrays_are_model_ready(digits_out: Path) -> None:
    for name, (x, y) in read_all(digits_out).items():
        assert x.ndim == 4 and x.shape[1:] == (16, 16, 1), name
        assert x.dtype == np.float32, name
        assert y.dtype == np.int64, name
        assert len(x) == len(y) > 0, name
        assert x.min() >= 0.0 and x.max() <= 1.0, name
        assert set(np.unique(y)) <= set(range(10)), name
    x, _ = load_split(digits_out, "train")
    assert x.max() > 0.9 and x.min() == 0.0  # really scaled to [0, 1], not left at 0..16


def test_digits_counts_add_up(digits_out: Path) -> None:
    splits = read_all(digits_out)
    meta = read_meta(digits_out)
    sizes = {name: len(y) for name, (_, y) in splits.items()}
    assert sizes == meta["counts"]
    assert sizes["train"] + sizes["val"] + sizes["test"] == DIGITS_TOTAL
    assert sizes["test"] == pytest.approx(0.2 * DIGITS_TOTAL, abs=1)
    assert sizes["val"] == pytest.approx(0.15 * DIGITS_TOTAL, abs=1)
    assert sizes["calib"] == 200  # default calibration_size, train is larger


def test_digits_calib_is_a_subset_of_train(digits_out: Path) -> None:
    train = set(rows(*load_split(digits_out, "train")))
    calib = rows(*load_split(digits_out, "calib"))
    missing = [key for key in calib if key not in train]
    assert not missing, f"{len(missing)} calib rows are not in train"


def test_digits_split_is_stratified(digits_out: Path) -> None:
    for name in ("train", "val", "test"):
        _, y = load_split(digits_out, name)
        counts = np.bincount(y, minlength=10)
        assert (counts > 0).all(), f"{name} misses a class: {counts}"
    _, y_test = load_split(digits_out, "test")
    _, y_train = load_split(digits_out, "train")
    # class proportions follow the whole set's (each class is ~10%)
    assert np.abs(np.bincount(y_test) / len(y_test) - np.bincount(y_train) / len(y_train)).max() < 0.02


def test_digits_same_seed_gives_identical_arrays(digits_out: Path, tmp_path: Path) -> None:
    again = prepare(DataParams(source="digits", image_size=(16, 16)), tmp_path / "again")
    first, second = read_all(digits_out), read_all(again)
    for name in SPLITS:
        np.testing.assert_array_equal(first[name][0], second[name][0], err_msg=name)
        np.testing.assert_array_equal(first[name][1], second[name][1], err_msg=name)
    assert read_meta(again)["sha256"] == read_meta(digits_out)["sha256"]


def test_digits_different_seed_gives_a_different_split(digits_out: Path, tmp_path: Path) -> None:
    other = prepare(DataParams(source="digits", image_size=(16, 16), seed=7), tmp_path / "other")
    base, changed = read_all(digits_out), read_all(other)
    # same sizes (same fractions), different members
    assert {n: len(base[n][1]) for n in SPLITS} == {n: len(changed[n][1]) for n in SPLITS}
    assert not np.array_equal(base["test"][0], changed["test"][0])
    assert set(rows(*base["test"])) != set(rows(*changed["test"]))
    assert read_meta(other)["seed"] == 7


def test_digits_rgb_gives_three_equal_channels(tmp_path: Path) -> None:
    out_dir = prepare(DataParams(source="digits", image_size=(8, 12), color="rgb"),
                      tmp_path / "rgb")
    x, _ = load_split(out_dir, "train")
    assert x.shape[1:] == (8, 12, 3)  # (height, width, channels)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[..., 0], x[..., 1])  # grey digits: R == G == B
    np.testing.assert_allclose(x[..., 0], x[..., 2])
    meta = read_meta(out_dir)
    assert meta["input_shape"] == [8, 12, 3] and meta["color"] == "rgb"


# --------------------------------------------------------------------------- folder

# class -> (Pillow mode, fill colour); classes sort as black, red, white
CLASSES = {"black": ("L", 0), "red": ("RGB", (255, 0, 0)), "white": ("L", 255)}
PER_CLASS = 10
SPLIT = SplitParams(val=0.2, test=0.2)


def save_image(path: Path, mode: str, colour, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def build_tree(root: Path, per_class: int = PER_CLASS) -> Path:
    """Solid-colour images of varied sizes, PNG and JPEG, grey and colour."""
    for name, (mode, colour) in CLASSES.items():
        for i in range(per_class):
            size = (10 + 7 * i, 40 - 3 * i)  # every image a different (width, height)
            suffix = ".png" if i % 2 == 0 else (".jpg" if i % 4 == 1 else ".JPEG")
            # the white class mixes grey and colour files of the same content
            use_mode, use_colour = ("RGB", (255, 255, 255)) if name == "white" and i % 3 == 0 \
                else (mode, colour)
            save_image(root / name / f"img{i:02d}{suffix}", use_mode, use_colour, size)
    return root


def folder_params(root: Path, **overrides) -> DataParams:
    values = dict(source="folder", folder=root.resolve(), image_size=(16, 12), split=SPLIT,
                  calibration_size=5, seed=3)
    values.update(overrides)
    return DataParams(**values)


def test_folder_reads_images_and_lists_skipped_files(tmp_path: Path) -> None:
    root = build_tree(tmp_path / "images")
    (root / "black" / "empty.png").write_bytes(b"")
    (root / "red" / "corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(512))
    (root / "white" / "notes.txt").write_text("not an image\n")
    (root / "white" / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored silently

    out_dir = prepare(folder_params(root), tmp_path / "prepared")

    meta = read_meta(out_dir)
    assert meta["classes"] == ["black", "red", "white"]
    assert meta["per_class"] == {"black": PER_CLASS, "red": PER_CLASS, "white": PER_CLASS}
    assert meta["input_shape"] == [16, 12, 1]
    assert meta["source"] == f"folder:{root.resolve()}"
    counts = meta["counts"]
    assert counts["train"] + counts["val"] + counts["test"] == 3 * PER_CLASS
    assert counts["calib"] == 5
    assert meta["skipped_count"] == 3
    reasons = {entry["file"]: entry["reason"] for entry in meta["skipped"]}
    assert set(reasons) == {"black/empty.png", "red/corrupt.jpg", "white/notes.txt"}
    assert reasons["black/empty.png"] == "empty file"
    assert reasons["red/corrupt.jpg"].startswith("unreadable")
    assert "PNG or JPEG" in reasons["white/notes.txt"]

    splits = read_all(out_dir)
    for name, (x, y) in splits.items():
        assert x.shape[1:] == (16, 12, 1), name  # every size resized to (height, width)
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.min() >= 0.0 and x.max() <= 1.0
    for name in ("train", "val", "test"):
        assert set(splits[name][1].tolist()) == {0, 1, 2}, f"{name} is not stratified"
    assert set(rows(*splits["calib"])) <= set(rows(*splits["train"]))


def test_folder_pixels_match_their_labels(tmp_path: Path) -> None:
    """Grey and colour files become the same grey input; labels follow class folders."""
    root = build_tree(tmp_path / "images")
    grey = read_all(prepare(folder_params(root), tmp_path / "grey"))
    rgb = read_all(prepare(folder_params(root, color="rgb"), tmp_path / "rgb"))

    x = np.concatenate([grey[n][0] for n in ("train", "val", "test")])
    y = np.concatenate([grey[n][1] for n in ("train", "val", "test")])
    means = x.reshape(len(x), -1).mean(axis=1)
    np.testing.assert_allclose(means[y == 0], 0.0, atol=0.02)          # black
    np.testing.assert_allclose(means[y == 1], 0.299, atol=0.02)        # red -> luma
    np.testing.assert_allclose(means[y == 2], 1.0, atol=0.02)          # white, L or RGB

    x = np.concatenate([rgb[n][0] for n in ("train", "val", "test")])
    y = np.concatenate([rgb[n][1] for n in ("train", "val", "test")])
    assert x.shape[1:] == (16, 12, 3)
    channel_means = x[y == 1].mean(axis=(0, 1, 2))
    np.testing.assert_allclose(channel_means, [1.0, 0.0, 0.0], atol=0.02)  # red stays red
    np.testing.assert_allclose(x[y == 0], 0.0, atol=0.02)  # grey L image -> 3 equal channels
    np.testing.assert_allclose(x[y == 2], 1.0, atol=0.02)


def test_folder_letterboxed_keeps_each_image_aspect_with_black_borders(tmp_path: Path) -> None:
    """White images wider than 12:16 sit in a white band between black rows; squashed,
    they fill the whole input (fit is recorded in meta.json for the predictor)."""
    root = tmp_path / "images"
    for name, size in (("wide", (48, 12)), ("square", (20, 20))):
        for i in range(8):
            save_image(root / name / f"{i}.png", "L", 255, size)
    boxed = prepare(folder_params(root, fit="letterbox", split=SplitParams(val=0.25, test=0.25)),
                    tmp_path / "boxed")
    assert read_meta(boxed)["fit"] == "letterbox"
    x, y = load_split(boxed, "train")
    wide, square = x[y == 1][0, ..., 0], x[y == 0][0, ..., 0]
    # 48x12 into 12 wide, 16 high: scaled to 12x3, rows 6-8 white, the rest black.
    np.testing.assert_array_equal(wide.mean(axis=1), [0] * 6 + [1] * 3 + [0] * 7)
    # 20x20: scaled to 12x12, two black rows above and below.
    np.testing.assert_array_equal(square.mean(axis=1), [0] * 2 + [1] * 12 + [0] * 2)
    squashed = prepare(folder_params(root, split=SplitParams(val=0.25, test=0.25)),
                       tmp_path / "squashed")
    assert read_meta(squashed)["fit"] == "squash"
    np.testing.assert_array_equal(load_split(squashed, "train")[0], 1.0)


def test_folder_is_deterministic(tmp_path: Path) -> None:
    root = build_tree(tmp_path / "images")
    first = read_all(prepare(folder_params(root), tmp_path / "a"))
    second = read_all(prepare(folder_params(root), tmp_path / "b"))
    for name in SPLITS:
        np.testing.assert_array_equal(first[name][0], second[name][0], err_msg=name)
        np.testing.assert_array_equal(first[name][1], second[name][1], err_msg=name)


def test_folder_with_one_class_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "images"
    for i in range(5):
        save_image(root / "only" / f"{i}.png", "L", 128, (12, 12))
    (root / ".hidden").mkdir()  # hidden folders are not classes
    save_image(root / ".hidden" / "x.png", "L", 0, (12, 12))

    with pytest.raises(DataError, match="at least 2") as caught:
        prepare(folder_params(root), tmp_path / "prepared")
    assert "has 1 class subfolder" in str(caught.value)
    assert not (tmp_path / "prepared").exists()


def test_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        prepare(folder_params(tmp_path / "nowhere"), tmp_path / "prepared")


def test_class_with_only_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    root = build_tree(tmp_path / "images", per_class=3)
    (root / "broken").mkdir()
    (root / "broken" / "photo.jpg").write_bytes(np.random.default_rng(1).bytes(300))

    with pytest.raises(DataError) as caught:
        prepare(folder_params(root), tmp_path / "prepared")
    message = str(caught.value)
    assert "'broken'" in message
    assert "no readable" in message
    assert "\n" not in message


def test_class_too_small_to_stratify_is_a_data_error(tmp_path: Path) -> None:
    root = build_tree(tmp_path / "images", per_class=1)
    with pytest.raises(DataError, match="cannot stratify 3 images over 3 classes"):
        prepare(folder_params(root), tmp_path / "prepared")


def test_failing_prepare_keeps_the_previous_output(tmp_path: Path) -> None:
    root = build_tree(tmp_path / "images")
    out_dir = prepare(folder_params(root), tmp_path / "prepared")
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    assert set(before) == {"train.npz", "val.npz", "test.npz", "calib.npz", "meta.json"}

    # the same folder becomes unusable: a class with no readable image
    for path in (root / "white").iterdir():
        path.write_bytes(b"")
    with pytest.raises(DataError, match="'white'"):
        prepare(folder_params(root), out_dir)

    after = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    assert after == before
    # nor a half-written staging folder beside it
    assert sorted(os.listdir(tmp_path)) == ["images", "prepared"]


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    root = build_tree(tmp_path / "images", per_class=5)
    for i in range(5):  # a class of mid-grey 16-bit images
        pixels = np.full((12, 12), 32768, dtype=np.uint16)
        path = root / "mid16" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(path)
    out_dir = prepare(folder_params(root), tmp_path / "prepared")
    label = read_meta(out_dir)["classes"].index("mid16")
    x, y = load_split(out_dir, "train")
    np.testing.assert_allclose(x[y == label], 0.5, atol=0.02)


# --------------------------------------------------------------------------- hostile folders


def test_a_decompression_bomb_is_skipped_and_named(tmp_path: Path) -> None:
    """A tiny PNG that claims 20000x20000 pixels: Pillow refuses to decode it, and the
    step goes on without it, naming it with Pillow's reason."""
    root = build_tree(tmp_path / "images")
    bomb = root / "black" / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb)
    assert bomb.stat().st_size < 100_000  # small on disk, 400 million pixels decoded

    meta = read_meta(prepare(folder_params(root), tmp_path / "prepared"))

    assert meta["skipped"] == [{
        "file": "black/bomb.png",
        "reason": f"not decoded: Image size ({20_000 * 20_000} pixels) exceeds limit of "
                  f"{2 * Image.MAX_IMAGE_PIXELS} pixels, could be decompression bomb DOS attack."}]
    assert meta["per_class"]["black"] == PER_CLASS


def test_broken_and_looping_links_are_skipped_and_named(tmp_path: Path) -> None:
    root = build_tree(tmp_path / "images")
    (root / "black" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "red" / "loop-a.png").symlink_to(root / "red" / "loop-b.png")
    (root / "red" / "loop-b.png").symlink_to(root / "red" / "loop-a.png")
    (root / "white" / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    (root / "white" / "linked.png").symlink_to(root / "white" / "img00.png")  # followed
    (root / "dangling-class").symlink_to(tmp_path / "no-such-class")

    meta = read_meta(prepare(folder_params(root), tmp_path / "prepared"))

    assert meta["classes"] == ["black", "red", "white"]
    assert meta["skipped"] == [
        {"file": "dangling-class", "reason": f"broken link to {tmp_path / 'no-such-class'}"},
        {"file": "black/gone.png", "reason": f"broken link to {tmp_path / 'nowhere.png'}"},
        {"file": "red/loop-a.png", "reason": "link loop (following it never reaches a file)"},
        {"file": "red/loop-b.png", "reason": "link loop (following it never reaches a file)"},
        {"file": "white/elsewhere", "reason": "link to a folder: not followed inside a class "
                                              "(link the images themselves)"},
    ]
    assert meta["skipped_count"] == 5
    assert meta["per_class"] == {"black": PER_CLASS, "red": PER_CLASS, "white": PER_CLASS + 1}


def test_a_split_with_too_few_images_of_a_class_is_a_warning_naming_the_counts() -> None:
    from tasks.prepare import MIN_IMAGES_PER_CLASS, small_split_warnings

    assert MIN_IMAGES_PER_CLASS == 10
    per_split = {"train": {"cat": 40, "dog": 12}, "val": {"cat": 10, "dog": 9},
                 "test": {"cat": 10, "dog": 10}, "calib": {"cat": 1, "dog": 1}}
    assert small_split_warnings(per_split) == [
        "data: the val split has fewer than 10 images of class 'dog' (val: cat 10, dog 9); "
        "accuracy measured on it is uncertain: add images or raise data.split.val"]
    per_split["test"] = {"cat": 2, "dog": 0}
    assert small_split_warnings(per_split)[1] == (
        "data: the test split has fewer than 10 images of classes 'cat', 'dog' (test: cat 2, "
        "dog 0); accuracy measured on it is uncertain: add images or raise data.split.test")
    per_split["test"] = {"cat": 10, "dog": 10}
    per_split["train"]["cat"] = 3  # calib is a subset of train and never warned about
    per_split["val"]["dog"] = 10
    assert small_split_warnings(per_split) == [
        "data: the train split has fewer than 10 images of class 'cat' (train: cat 3, dog 12); "
        "accuracy measured on it is uncertain: add images to that class"]


# --------------------------------------------------------------------------- split, in process


def _split_params(**overrides) -> DataParams:
    values = dict(split=SplitParams(val=0.3, test=0.1), calibration_size=9, seed=5)
    values.update(overrides)
    return DataParams(**values)


def test_split_sizes_per_split_and_class_follow_val_and_test_not_each_other() -> None:
    """120 labels of 3 classes (40, 20, 60), val 0.3 and test 0.1 (different, so a swap
    shows): 48 held out, of them 12 test and 36 val, every class in proportion."""
    from tasks.prepare import class_counts, split_indices

    labels = np.repeat([0, 1, 2], [40, 20, 60])
    splits = split_indices(labels, _split_params())
    per_class = {name: class_counts(labels[index], ["a", "b", "c"])
                 for name, index in splits.items()}
    assert per_class == {"train": {"a": 24, "b": 12, "c": 36}, "val": {"a": 12, "b": 6, "c": 18},
                         "test": {"a": 4, "b": 2, "c": 6}, "calib": per_class["calib"]}
    assert len(splits["calib"]) == 9
    assert set(splits["calib"]) <= set(splits["train"])
    # Drawn from the whole train split: the labels come grouped by class, so its lowest
    # (or first listed) indices would all be one class.
    assert len(set(labels[splits["calib"]].tolist())) > 1
    for name, index in splits.items():
        assert index.tolist() == sorted(index.tolist()), name
    everything = np.concatenate([splits["train"], splits["val"], splits["test"]])
    assert sorted(everything.tolist()) == list(range(120))  # disjoint and complete
    # The seed decides the split and the calibration subset; the sizes stay.
    again = split_indices(labels, _split_params())
    assert all(np.array_equal(again[name], splits[name]) for name in splits)
    other = split_indices(labels, _split_params(seed=6))
    assert not np.array_equal(other["test"], splits["test"])
    assert not np.array_equal(other["calib"], splits["calib"])
    assert [len(other[name]) for name in ("train", "val", "test", "calib")] == [72, 36, 12, 9]
    # A calibration size over the train split's is the whole train split.
    assert split_indices(labels, _split_params(calibration_size=500))["calib"].tolist() == \
        splits["train"].tolist()


@pytest.mark.parametrize(("images", "val", "test", "sizes"), [
    (120, 0.25, 0.1, (78, 30, 12)),  # 0.1 / 0.35 * 42 = 12.000000000000002
    (1797, 0.15, 0.2, (1168, 269, 360)),  # the defaults: 628.95 held out, so 629
    (100, 0.1, 0.1, (80, 10, 10)),
])
def test_split_sizes_are_the_fractions_rounded_up_without_float_noise(
        images: int, val: float, test: float, sizes: tuple[int, int, int]) -> None:
    """Each split takes its fraction of the images rounded up (as scikit-learn rounds a
    fractional test_size), a whole number of images staying whole: float noise in
    test / (val + test) must not add an image to the test split."""
    from tasks.prepare import split_indices

    labels = np.arange(images) % 2
    splits = split_indices(labels, _split_params(split=SplitParams(val=val, test=test)))
    assert tuple(len(splits[name]) for name in ("train", "val", "test")) == sizes


def test_a_split_that_cannot_be_stratified_names_the_smallest_class() -> None:
    from tasks.prepare import split_indices

    with pytest.raises(DataError) as refused:
        split_indices(np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2]), _split_params())
    assert str(refused.value).startswith(
        "data.split: cannot stratify 11 images over 3 classes (smallest class has 2 images): ")


def test_class_counts_name_every_class_with_zeros() -> None:
    from tasks.prepare import class_counts

    assert class_counts(np.array([2, 2, 0]), ["a", "b", "c", "d"]) == {
        "a": 1, "b": 0, "c": 2, "d": 0}
