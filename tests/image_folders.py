"""Real photo folders for the training tests, built from images that ship inside installed
packages (no download): scikit-learn's ``china.jpg`` and ``flower.jpg`` and Matplotlib's
``grace_hopper.jpg``. Each class is one photograph; its images are seeded random crops of
it (position, scale from a quarter to half of the short side, a mirror at random) saved as
48x48 JPEGs, so a class is a kind of scene rather than one picture, and images of one
class differ as much as photos of one subject do.

``class_counts`` sets the images per class (an imbalanced folder is just uneven counts);
``shuffle_labels`` deals the same images into the class folders at random, so no model can
learn a rule that holds on unseen images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CROP_SIZE = 48  # pixels per side on disk; prepare resizes to the params' image_size


def package_photos() -> dict[str, Path]:
    """The photographs available as classes, by class name."""
    import matplotlib.cbook
    import sklearn.datasets

    sklearn_images = Path(sklearn.datasets.__file__).parent / "images"
    return {
        "china": sklearn_images / "china.jpg",
        "flower": sklearn_images / "flower.jpg",
        "hopper": Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
    }


def _random_crop(photo: "object", rng: np.random.Generator) -> "object":
    from PIL import Image, ImageOps

    width, height = photo.size  # type: ignore[attr-defined]
    side = int(rng.uniform(0.25, 0.5) * min(width, height))
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    crop = photo.crop((left, top, left + side, top + side))  # type: ignore[attr-defined]
    crop = crop.resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR)
    return ImageOps.mirror(crop) if rng.random() < 0.5 else crop


def build_photo_folder(root: Path, class_counts: dict[str, int], seed: int = 0,
                       shuffle_labels: bool = False) -> Path:
    """Write ``root/<class>/<n>.jpg`` for each class of ``class_counts`` (names from
    :func:`package_photos`); returns ``root``."""
    from PIL import Image

    photos = package_photos()
    unknown = sorted(set(class_counts) - set(photos))
    if unknown:
        raise ValueError(f"no package photo for classes {unknown}; known: {sorted(photos)}")
    rng = np.random.default_rng(seed)
    crops: list[tuple[str, object]] = []
    for name, count in class_counts.items():
        with Image.open(photos[name]) as photo:
            rgb = photo.convert("RGB")
        crops.extend((name, _random_crop(rgb, rng)) for _ in range(count))
    labels = [name for name, _ in crops]
    if shuffle_labels:
        labels = [labels[i] for i in rng.permutation(len(labels))]
    for name in class_counts:
        (root / name).mkdir(parents=True, exist_ok=True)
    for index, (label, (_, crop)) in enumerate(zip(labels, crops)):
        crop.save(root / label / f"{index:04d}.jpg", quality=90)  # type: ignore[attr-defined]
    return root
