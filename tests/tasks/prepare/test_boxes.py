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
