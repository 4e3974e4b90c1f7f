"""The box array every detection source gives: (k, 5) float64, no objects included."""

from __future__ import annotations

import numpy as np

from tasks.prepare.boxes import BOX_COLUMNS, box_array


def test_rows_become_a_k_by_5_float64_array_and_none_a_0_by_5_one() -> None:
    assert BOX_COLUMNS == ("class", "x0", "y0", "x1", "y1")
    boxes = box_array([(2, 0.1, 0.2, 0.3, 0.4), (0, 0.0, 0.0, 1.0, 1.0)])
    assert boxes.shape == (2, 5) and boxes.dtype == np.float64
    assert boxes.tolist() == [[2.0, 0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.0, 1.0, 1.0]]
    # float64 keeps a coordinate read from a file as written: as float32, 0.1 would
    # come back as 0.10000000149011612.
    assert box_array([(0, 0.1, 0.2, 0.3, 0.4)]).tolist() == [[0.0, 0.1, 0.2, 0.3, 0.4]]
    empty = box_array([])
    assert empty.shape == (0, 5) and empty.dtype == np.float64


def test_fitted_boxes_move_corners_by_scale_and_offset_and_keep_the_class() -> None:
    from tasks.prepare.boxes import fitted_boxes

    boxes = box_array([(2, 0.25, 0.5, 0.75, 1.0), (0, 0.0, 0.0, 1.0, 1.0)])
    moved = fitted_boxes(boxes, (0.5, 0.25, 0.25, 0.5))
    assert moved.tolist() == [[2.0, 0.375, 0.625, 0.625, 0.75], [0.0, 0.25, 0.5, 0.75, 0.75]]
    assert boxes[0].tolist() == [2.0, 0.25, 0.5, 0.75, 1.0]  # the input is not changed
    assert fitted_boxes(boxes, (1.0, 1.0, 0.0, 0.0)).tolist() == boxes.tolist()
    assert fitted_boxes(box_array([]), (0.5, 0.5, 0.0, 0.0)).shape == (0, 5)
