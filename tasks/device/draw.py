"""A detector's answer drawn on the image it was asked about (``predict.py --draw``).

Each box is a rectangle in its class's colour (:func:`colour`: a fixed palette, the same
colour for a class on every image and every run), labelled ``"name 0.87"`` (the class's
name and the score to two places) on a band of that colour at the box's top-left corner,
above the box where there is room, inside it where not. Boxes are the predictor's: in
the image's pixels, ``[x0, y0, x1, y1]``. Pillow (``ImageDraw``) and the standard
library only: it ships in the device package.
"""

from __future__ import annotations

from typing import Any, Sequence

# Clear, mutually distinct colours (Tableau's ten): class i draws in PALETTE[i % 10].
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def colour(index: int) -> tuple[int, int, int]:
    """The RGB colour class ``index`` is drawn in."""
    return PALETTE[index % len(PALETTE)]


def line_width(width: int, height: int) -> int:
    """The rectangles' width in pixels: 2, thicker on large images (1/200 of the shorter
    side) so a box stays visible when the picture is shown scaled down."""
    return max(2, round(min(width, height) / 200))


def label(detection: dict[str, Any]) -> str:
    """A box's label: ``"name 0.87"``."""
    return f"{detection['class']} {detection['score']:.2f}"


def draw_detections(image: Any, detections: Sequence[dict[str, Any]], path: str) -> None:
    """Write ``image`` (a PIL image, upright as the boxes were placed in it) as a PNG at
    ``path`` with ``detections`` (the predictor's answer: ``class``, ``index``,
    ``score``, ``box`` in pixels) drawn, the best last (on top)."""
    from PIL import ImageDraw, ImageFont

    canvas = image.convert("RGB")
    pen = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    thickness = line_width(canvas.width, canvas.height)
    for detection in reversed(detections):
        x0, y0, x1, y1 = (float(value) for value in detection["box"])
        fill = colour(int(detection["index"]))
        pen.rectangle((x0, y0, x1, y1), outline=fill, width=thickness)
        text = label(detection)
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        band_height = bottom - top + 2
        band_top = y0 - band_height if y0 - band_height >= 0 else y0
        pen.rectangle((x0, band_top, x0 + right - left + 3, band_top + band_height), fill=fill)
        # Black or white, whichever reads better on the class's colour.
        ink = (0, 0, 0) if sum(fill) / 3 > 128 else (255, 255, 255)
        pen.text((x0 + 2 - left, band_top + 1 - top), text, fill=ink, font=font)
    canvas.save(path, format="PNG")
