"""Reading one image file as model input, for every source that reads files (a folder
of class subfolders, a detection folder): the checks made before anything is decoded
(:data:`FILE_CHECKS`, :func:`file_problem`), then decoding, each failure a reason that
prepare names in ``meta.json`` (``skipped``) instead of a traceback.

Unreadable or empty images, decompression bombs (more pixels than Pillow will decode),
broken or looping links, links to folders and special files are the reasons."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tasks.config import DataParams
from tasks.prepare import preprocessing
from tasks.prepare.image_files import IMAGE_SUFFIXES, NOT_AN_IMAGE


def link_problem(path: Path) -> str | None:
    """Why a symbolic link leads nowhere (None when it is no link or reaches something).
    ``Path.is_file`` and ``is_dir`` answer False for both, which would drop it silently."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "link loop (following it never reaches a file)"
        return f"broken link to {os.readlink(path)}"
    return None


def _folder_link(path: Path) -> str | None:
    # rglob lists a linked folder but does not enter it: following links inside a
    # class could loop or pull in a whole disk, so it is named instead.
    if path.is_symlink() and path.is_dir():
        return "link to a folder: not followed inside a class (link the images themselves)"
    return None


def _special_file(path: Path) -> str | None:
    # A FIFO named like an image would block Image.open for ever.
    return None if path.is_file() else "not a regular file"


def _not_an_image(path: Path) -> str | None:
    return None if path.suffix.lower() in IMAGE_SUFFIXES else NOT_AN_IMAGE


def _empty(path: Path) -> str | None:
    return "empty file" if path.stat().st_size == 0 else None


# Checked in order, before anything is decoded; the first reason found skips the file.
FILE_CHECKS: tuple[Callable[[Path], str | None], ...] = (
    link_problem, _folder_link, _special_file, _not_an_image, _empty)


def file_problem(path: Path) -> str | None:
    """The first of :data:`FILE_CHECKS`' reasons not to decode ``path``; None: decode it."""
    return next((reason for check in FILE_CHECKS if (reason := check(path)) is not None), None)


@dataclass(frozen=True)
class ReadImage:
    """An image as model input (float32 (H, W, C) in [0, 1]) and the size it had, upright
    (after its EXIF rotation, as its pixels and any labels of it are seen): (width, height)."""

    x: np.ndarray
    size: tuple[int, int]


def _upright(image: Any) -> Any:
    from PIL import ImageOps

    # Photos shot sideways carry an EXIF rotation; labels are drawn on the upright image
    # (the pre-processing turns it again: a no-op once the tag is gone).
    return ImageOps.exif_transpose(image)


def decode(path: Path, params: DataParams) -> ReadImage:
    """One image file as model input (the predictor's pre-processing,
    :mod:`tasks.prepare.preprocessing`); ValueError (with the reason) when it cannot be
    used."""
    from PIL import Image, UnidentifiedImageError

    height, width = params.image_size
    try:
        with Image.open(path) as image:
            image.load()
            if image.width == 0 or image.height == 0:
                raise ValueError("image has no pixels")
            upright = _upright(image)
            return ReadImage(preprocessing.to_model_input(upright, height, width, params.color,
                                                          params.fit), upright.size)
    except Image.DecompressionBombError as error:  # a few KB on disk, gigabytes decoded
        raise ValueError(f"not decoded: {error}") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(f"unreadable: {error}") from None
