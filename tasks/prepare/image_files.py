"""Which files prepare reads as images: shared by the class-per-subfolder source and the
detection label readers (:mod:`tasks.prepare.detection_labels`), so that both take and
skip the same files."""

from __future__ import annotations

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
NOT_AN_IMAGE = "not a PNG or JPEG file"
