"""tasks/device/kinds/detection.py: a detector's output decoded into boxes (grid and YOLO
layouts), per-class NMS, COCO matching and 101-point AP (mAP@0.5, mAP@0.5:0.95, per
class), the bootstrap interval over images, agreement with a reference, the predictor's
answer; found by the registry and shipped with the device package."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.core import device_code
from tasks.device.kinds import detection
from tasks.device.predict import CHECK_Z

KIND = detection.KIND


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def image(*rows: list[float]) -> np.ndarray:
    """One image's ground truth: rows [class, x0, y0, x1, y1]."""
    return np.array(rows, np.float64).reshape(-1, 5)


def found(*rows: list[float]) -> np.ndarray:
    """One image's detections: rows [class, score, x0, y0, x1, y1]."""
    return np.array(rows, np.float64).reshape(-1, 6)


# --- NMS --------------------------------------------------------------------------------


def test_nms_suppresses_overlaps_of_one_class_and_never_across_classes() -> None:
    boxes = np.array([[0.0, 0.0, 0.4, 0.4],     # 0: class 0, best
                      [0.02, 0.0, 0.42, 0.4],   # 1: class 0, IoU 0.905 with 0: suppressed
                      [0.02, 0.0, 0.42, 0.4],   # 2: class 1, same box: another class, kept
                      [0.5, 0.5, 0.9, 0.9]])    # 3: class 0, apart: kept
    kept = detection.nms(boxes, np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 0, 1, 0]), 0.45, 100)
    assert kept.tolist() == [0, 2, 3]


def test_nms_keeps_a_box_at_exactly_the_threshold_and_drops_one_above() -> None:
    # The second box is the left half of the first: IoU exactly 0.25 / 0.5 = 0.5.
    boxes = np.array([[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.25, 1.0]])
    scores, classes = np.array([0.9, 0.8]), np.array([3, 3])
    assert detection.nms(boxes, scores, classes, 0.5, 100).tolist() == [0, 1]
    assert detection.nms(boxes, scores, classes, 0.49, 100).tolist() == [0]


def test_nms_keeps_at_most_max_detections_best_first() -> None:
    boxes = np.array([[0.2 * i, 0.0, 0.2 * i + 0.1, 0.1] for i in range(5)])  # disjoint
    scores = np.array([0.1, 0.5, 0.3, 0.9, 0.7])
    classes = np.array([0, 1, 0, 1, 0])
    assert detection.nms(boxes, scores, classes, 0.45, 3).tolist() == [3, 4, 1]
    assert detection.nms(boxes, scores, classes, 0.45, 100).tolist() == [3, 4, 1, 2, 0]


def test_nms_breaks_ties_by_index() -> None:
    same = np.array([[0.1, 0.1, 0.3, 0.3]] * 3)
    # Equal scores on one box: the first index stays, whatever its class's order.
    assert detection.nms(same, np.array([0.5, 0.5, 0.5]), np.array([0, 0, 0]), 0.45, 10).tolist() == [0]
    apart = np.array([[0.0, 0.0, 0.1, 0.1], [0.5, 0.5, 0.6, 0.6], [0.8, 0.8, 0.9, 0.9]])
    # Equal scores of boxes kept, of classes listed in another order: index order.
    assert detection.nms(apart, np.array([0.5, 0.5, 0.5]), np.array([2, 1, 0]), 0.45, 10).tolist() == [0, 1, 2]
    assert detection.nms(apart, np.array([0.5, 0.5, 0.5]), np.array([2, 1, 0]), 0.45, 2).tolist() == [0, 1]


def _reference_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                   threshold: float) -> list[int]:
    """The textbook loop in plain Python: best first, drop what overlaps a kept box of
    its class by more than the threshold."""
    def iou(a: np.ndarray, b: np.ndarray) -> float:
        inter = (max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
                 * max(0.0, min(a[3], b[3]) - max(a[1], b[1])))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    kept: list[int] = []
    for index in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if all(classes[k] != classes[index] or iou(boxes[k], boxes[index]) <= threshold
               for k in kept):
            kept.append(index)
    return kept


def test_nms_agrees_with_the_textbook_loop_on_random_boxes() -> None:
    generator = np.random.default_rng(7)
    for _ in range(20):
        count = 60
        corner = generator.uniform(0, 0.8, (count, 2))
        boxes = np.concatenate([corner, corner + generator.uniform(0.05, 0.3, (count, 2))], 1)
        scores = np.round(generator.uniform(0, 1, count), 2)  # rounded: ties happen
        classes = generator.integers(0, 3, count)
        assert detection.nms(boxes, scores, classes, 0.45, 1000).tolist() == \
            _reference_nms(boxes, scores, classes, 0.45)


# --- decoding ---------------------------------------------------------------------------


def _grid_output() -> np.ndarray:
    """S = 3, C = 2: every cell empty (objectness logit -10) but row 1, column 2, whose
    objectness logit is 2, centre offsets and size logits 0 (sigmoid 0.5) and class
    logits [0, ln 3] (softmax [0.25, 0.75])."""
    output = np.full((1, 3, 3, 7), -10.0)
    output[0, :, :, 5:] = 0.0
    output[0, 1, 2] = [2.0, 0.0, 0.0, 0.0, 0.0, 0.0, math.log(3.0)]
    return output


def test_a_grid_output_decodes_its_one_confident_cell_into_its_box() -> None:
    decoded = KIND.decode(_grid_output())
    # cx = (2 + 0.5) / 3, cy = (1 + 0.5) / 3, w = h = 0.5; x1 = 1.0833 clipped to 1;
    # score = sigmoid(2) * 0.75 = 0.6606; the empty cells score sigmoid(-10) * 0.5 < 0.25.
    assert decoded.shape == (1, 6)
    assert decoded[0] == pytest.approx([1, sigmoid(2.0) * 0.75, 2.5 / 3 - 0.25, 0.25, 1.0, 0.75],
                                       abs=1e-12)
    # Flattened, as the harness and the predictor pass it: the spec says the sizes.
    spec = {"detection": {"grid": 3, "classes": 2}}
    assert np.array_equal(KIND.decode(_grid_output().reshape(-1), spec), decoded)
    with pytest.raises(ValueError, match="needs the spec's detection.grid"):
        KIND.decode(_grid_output().reshape(-1))


def test_decoding_follows_the_specs_threshold_and_max_detections() -> None:
    output = _grid_output()
    output[0, 0, 0, 0] = 3.0   # a second cell, class 0 (logits 0, 0: 0.5), score 0.476
    assert KIND.decode(output)[:, 0].tolist() == [1.0, 0.0]
    assert KIND.decode(output, {"detection": {"score_threshold": 0.5}})[:, 0].tolist() == [1.0]
    assert KIND.decode(output, {"detection": {"max_detections": 1}})[:, 0].tolist() == [1.0]
    assert KIND.decode(output, {"detection": {"score_threshold": 0.99}}).shape == (0, 6)


def test_a_yolo_output_decodes_pixels_of_the_input_into_fractions() -> None:
    # (1, 4 + 2, 3): candidate 1 is a 64 x 48 box centred at (320, 240) of a 640 x 480
    # input, class 1 at 0.9; candidates 0 and 2 score nothing above the threshold.
    output = np.zeros((1, 6, 3))
    output[0, :, 1] = [320.0, 240.0, 64.0, 48.0, 0.1, 0.9]
    output[0, :, 2] = [10.0, 10.0, 5.0, 5.0, 0.2, 0.1]
    spec = {"input": {"shape": [1, 3, 480, 640], "layout": "NCHW"},
            "detection": {"format": "yolo"}}
    assert KIND.decode(output, spec).tolist() == [[1.0, 0.9, 0.45, 0.45, 0.55, 0.55]]
    nhwc = {"input": {"shape": [1, 480, 640, 3]}, "detection": {"format": "yolo", "classes": 2}}
    assert KIND.decode(output.reshape(-1), nhwc).tolist() == [[1.0, 0.9, 0.45, 0.45, 0.55, 0.55]]
    with pytest.raises(ValueError, match="input's size"):
        KIND.decode(output, {"detection": {"format": "yolo"}})


def test_the_output_check_wants_the_layouts_shape_for_one_image() -> None:
    x = np.zeros((1, 96, 96, 3))
    KIND.check_output(x, np.zeros((1, 3, 3, 7)), {})
    KIND.check_output(x, np.zeros((1, 3, 3, 7)), {"detection": {"grid": 3, "classes": 2}})
    KIND.check_output(x, np.zeros((1, 6, 8400)), {"detection": {"format": "yolo"}})
    for y, spec in ((np.zeros((2, 3, 3, 7)), {}), (np.zeros((1, 3, 4, 7)), {}),
                    (np.zeros((1, 3, 3, 5)), {}), (np.zeros((1, 3, 3, 7)), {"detection": {"grid": 4}}),
                    (np.zeros(63), {}), (np.zeros((0, 3, 3, 7)), {}),
                    (np.zeros((1, 4, 8400)), {"detection": {"format": "yolo"}})):
        with pytest.raises(ValueError, match="detection output"):
            KIND.check_output(x, y, spec)


def test_the_settings_default_and_refuse_unknown_keys_and_bad_values() -> None:
    assert detection.settings({}) == detection.Settings()
    assert (detection.Settings().score_threshold, detection.Settings().iou_threshold,
            detection.Settings().max_detections) == (0.25, 0.45, 100)
    for entry, message in (({"nms": 0.5}, "unknown key nms"),
                           ({"format": "ssd"}, "unknown output layout 'ssd': one of grid, yolo"),
                           ({"iou_threshold": 1.5}, "detection.iou_threshold must be"),
                           ({"max_detections": 0}, "detection.max_detections must be")):
        with pytest.raises(ValueError, match=message):
            detection.settings({"detection": entry})


def test_the_answer_lists_boxes_in_fractions_of_the_input_best_first() -> None:
    answer = KIND.answer(_grid_output(), ["cat", "dog"])
    assert answer == {"detections": [{"class": "dog", "index": 1,
                                      "score": round(sigmoid(2.0) * 0.75, 6),
                                      "box": [round(2.5 / 3 - 0.25, 6), 0.25, 1.0, 0.75]}]}


# --- scoring ----------------------------------------------------------------------------

THREE_TRUTHS = image([0, 0.0, 0.0, 0.2, 0.2], [0, 0.4, 0.4, 0.6, 0.6], [0, 0.7, 0.7, 0.9, 0.9])
# Ranked: a hit, a miss (on no box), a hit.
HIT_MISS_HIT = found([0, 0.9, 0.0, 0.0, 0.2, 0.2], [0, 0.8, 0.2, 0.0, 0.3, 0.1],
                     [0, 0.7, 0.4, 0.4, 0.6, 0.6])


def test_ap_of_a_known_curve_is_the_hand_worked_101_point_value() -> None:
    """3 ground truths, detections hit, miss, hit: recall 1/3, 1/3, 2/3, precision 1,
    1/2, 2/3, envelope 1, 2/3, 2/3. COCO reads the envelope at the first rank reaching
    each recall point: r = 0 .. 0.33 (34 points) -> 1; r = 0.34 .. 0.66 (33) -> 2/3;
    r = 0.67 .. 1 (34) -> 0 (never reached): AP = (34 + 33 * 2/3) / 101 = 56/101.
    Ultralytics' trapezoid over the envelope from (0, 1) to (1, 0), interpolated: 0.33
    at 1, (1 + 2/3)/2 * 0.01, 32 steps at 2/3, (2/3 + 0.66)/2 * 0.01, and the line from
    (2/3, 2/3) to (1, 0) integrated exactly, 0.33^2: 0.6672."""
    results = KIND.per_sample([HIT_MISS_HIT], [THREE_TRUTHS])
    assert results[0].hits[:, 0].tolist() == [True, False, True]
    assert KIND.metric(results) == pytest.approx(56 / 101, abs=1e-12)
    assert detection.scores(results, "ultralytics").map50 == pytest.approx(0.6672, abs=1e-12)


def test_a_perfect_detector_scores_one_and_ultralytics_point_995() -> None:
    results = KIND.per_sample([HIT_MISS_HIT[[0, 2]]], [THREE_TRUTHS[:2]])
    assert detection.scores(results).map50_95 == 1.0  # exactly: a floor of 1 is reachable
    # The trapezoid's last step falls from 1 to the (1, 0) sentinel: 0.99 + 0.005.
    assert detection.scores(results, "ultralytics").map50 == pytest.approx(0.995, abs=1e-12)
    with pytest.raises(ValueError, match="unknown AP method 'voc'"):
        detection.scores(results, "voc")


def test_map50_counts_a_loose_box_that_map50_95_counts_only_at_low_thresholds() -> None:
    truth = image([0, 0.0, 0.0, 0.5, 0.5])
    # IoU 0.145 / 0.25 = 0.58: a hit at 0.50 and 0.55, not at 0.60 .. 0.95: 2 of 10.
    loose = KIND.per_sample([found([0, 0.9, 0.0, 0.0, 0.5, 0.29])], [truth])
    assert detection.scores(loose).map50 == pytest.approx(1.0, abs=1e-12)
    assert detection.scores(loose).map50_95 == pytest.approx(0.2, abs=1e-12)
    # IoU exactly 0.6 (0.6 of the unit square) meets 0.60, as in COCOeval: 3 of 10.
    exact = KIND.per_sample([found([0, 0.9, 0.0, 0.0, 1.0, 0.6])], [image([0, 0.0, 0.0, 1.0, 1.0])])
    assert detection.scores(exact).map50_95 == pytest.approx(0.3, abs=1e-12)


def test_false_positives_on_an_image_without_ground_truth_lower_the_precision() -> None:
    with_truth = (found([0, 0.6, 0.1, 0.1, 0.3, 0.3]), image([0, 0.1, 0.1, 0.3, 0.3]))
    assert KIND.metric(KIND.per_sample([with_truth[0]], [with_truth[1]])) == pytest.approx(1.0)
    # The empty image's box outranks the hit: precision 0 then 1/2, envelope 1/2 at every
    # recall point: AP 0.5.
    empty = (found([0, 0.9, 0.5, 0.5, 0.7, 0.7]), image())
    results = KIND.per_sample([with_truth[0], empty[0]], [with_truth[1], empty[1]])
    assert results[1].hits.any() is np.False_ and len(results[1].truths) == 0
    assert KIND.metric(results) == pytest.approx(0.5, abs=1e-12)
    # A box of a class no image has counts for no class.
    other = found([4, 0.95, 0.5, 0.5, 0.7, 0.7])
    assert KIND.metric(KIND.per_sample([with_truth[0], other], [with_truth[1], image()])) == \
        pytest.approx(1.0)
    # No ground truth anywhere: nothing to find, 0.
    assert detection.scores(KIND.per_sample([other], [image()])) == detection.DetectionScores(0.0, 0.0)


def test_a_class_with_ground_truth_and_no_detection_scores_zero() -> None:
    truth = image([0, 0.1, 0.1, 0.3, 0.3], [1, 0.5, 0.5, 0.8, 0.8])
    result = detection.scores(KIND.per_sample([found([0, 0.8, 0.1, 0.1, 0.3, 0.3])], [truth]))
    assert result.ap50 == {0: pytest.approx(1.0), 1: 0.0}
    assert result.map50 == pytest.approx(0.5)
    assert result.ap50_95 == {0: pytest.approx(1.0), 1: 0.0}


def test_each_ground_truth_is_matched_once_by_the_best_scored_detection_of_its_class() -> None:
    truth = image([0, 0.1, 0.1, 0.3, 0.3])
    # Two boxes on the one truth, given worst first: the 0.9 one matches, the 0.5 one is
    # a false positive; a box of another class on it matches nothing.
    result = KIND.per_sample([found([0, 0.5, 0.1, 0.1, 0.3, 0.3], [0, 0.9, 0.1, 0.1, 0.3, 0.31],
                                   [1, 0.95, 0.1, 0.1, 0.3, 0.3])], [truth])[0]
    assert result.scores.tolist() == [0.95, 0.9, 0.5]
    assert result.hits[:, 0].tolist() == [False, True, False]
    # A detection takes the truth it overlaps most, not the first listed: the 0.9 box is
    # the second truth (IoU 1; 0.6 with the first), the 0.8 box overlaps the first truth
    # by 0.75 and the second by 0.4. Taking the first truth would leave the 0.8 box none.
    two = image([0, 0.0, 0.0, 0.4, 0.4], [0, 0.1, 0.0, 0.5, 0.4])
    nearer = KIND.per_sample([found([0, 0.9, 0.1, 0.0, 0.5, 0.4], [0, 0.8, 0.0, 0.0, 0.3, 0.4])],
                             [two])[0]
    assert nearer.hits[:, 0].tolist() == [True, True]
    assert nearer.hits[:, 4].tolist() == [True, True]    # 0.70
    assert nearer.hits[:, 6].tolist() == [True, False]   # 0.80: above the 0.8 box's 0.75


def test_rows_of_class_minus_one_are_the_splits_padding_not_objects() -> None:
    """The prepared split's y pads every image's objects to the most of any image with
    rows of class -1: the same image, padded, scores the same."""
    padded = np.vstack([THREE_TRUTHS, np.tile([-1.0, 0.0, 0.0, 0.0, 0.0], (2, 1))])
    result = KIND.per_sample([HIT_MISS_HIT], [padded])
    assert result[0].truths.tolist() == [0, 0, 0]
    assert KIND.metric(result) == pytest.approx(56 / 101, abs=1e-12)
    # A split as the harness holds it: (N, M, 5), the second image with no object at all.
    split = np.stack([padded, np.tile([-1.0, 0.0, 0.0, 0.0, 0.0], (5, 1))])
    assert detection.scores(KIND.per_sample([HIT_MISS_HIT, found()], split)) == \
        detection.scores(KIND.per_sample([HIT_MISS_HIT, found()], [THREE_TRUTHS, image()]))


def test_per_image_results_survive_their_json_form() -> None:
    results = KIND.per_sample([HIT_MISS_HIT, found()], [THREE_TRUTHS, image([1, 0, 0, 1, 1])])
    again = [result.as_json() for result in results]
    assert detection.scores(again) == detection.scores(results)
    assert KIND.metric(np.array(again, dtype=object)) == KIND.metric(results)


def test_map_and_per_class_ap_are_cocoevals_on_generated_sets() -> None:
    """pycocotools' COCOeval (bbox, every area, 100 boxes an image) on random sets of
    4 classes, in pixels of a 640 x 480 image: mAP@0.5, mAP@0.5:0.95 and each class's AP
    within 1e-6 (found within 4e-16). Boxes jittered from the truths, some relabelled,
    some false positives, images without truths: every path of the matching."""
    coco = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    width, height, classes = 640, 480, 4
    for seed in range(10):
        generator = np.random.default_rng(seed)
        images, annotations, boxes, predictions, labels = [], [], [], [], []
        for index in range(int(generator.integers(5, 40))):
            images.append({"id": index + 1, "width": width, "height": height})
            count = int(generator.integers(0, 6))
            corner = generator.uniform(0, 0.7, (count, 2))
            truth = np.column_stack([generator.integers(0, classes, count), corner,
                                     corner + generator.uniform(0.05, 0.3, (count, 2))])
            rows = [[row[0] if generator.uniform() < 0.9 else generator.integers(0, classes),
                     generator.uniform(), *np.clip(row[1:] + generator.normal(0, 0.02, 4), 0, 1)]
                    for row in truth if generator.uniform() < 0.8]
            for _ in range(int(generator.integers(0, 4))):
                corner = generator.uniform(0, 0.7, 2)
                rows.append([generator.integers(0, classes), generator.uniform(), *corner,
                             *(corner + generator.uniform(0.05, 0.3, 2))])
            prediction = found(*[row for row in rows if row[4] > row[2] and row[5] > row[3]])
            labels.append(truth)
            predictions.append(prediction)
            for row in truth:
                x0, y0, x1, y1 = row[1] * width, row[2] * height, row[3] * width, row[4] * height
                annotations.append({"id": len(annotations) + 1, "image_id": index + 1,
                                    "category_id": int(row[0]) + 1, "iscrowd": 0,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
            for row in prediction:
                x0, y0, x1, y1 = row[2] * width, row[3] * height, row[4] * width, row[5] * height
                boxes.append({"image_id": index + 1, "category_id": int(row[0]) + 1,
                              "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(row[1])})
        truth_set = coco.COCO()
        truth_set.dataset = {"images": images, "annotations": annotations,
                             "categories": [{"id": c + 1, "name": str(c)} for c in range(classes)]}
        truth_set.createIndex()
        evaluation = cocoeval.COCOeval(truth_set, truth_set.loadRes(boxes), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        precision = evaluation.eval["precision"][:, :, :, 0, 2]  # IoU, recall, class; all, 100
        expected = {label: (float(np.mean(precision[0, :, label])), float(np.mean(precision[:, :, label])))
                    for label in range(classes) if (precision[:, :, label] > -1).any()}
        result = detection.scores(KIND.per_sample(predictions, labels))
        assert (result.map50, result.map50_95) == pytest.approx(
            (evaluation.stats[1], evaluation.stats[0]), abs=1e-6)
        assert {label: (result.ap50[label], result.ap50_95[label]) for label in result.ap50} == \
            {label: pytest.approx(values, abs=1e-6) for label, values in expected.items()}


# --- interval ---------------------------------------------------------------------------


def _scene(generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image: 1-3 truths of 3 classes; each found (shifted a little) with chance 0.7,
    one false positive with chance 0.5; random scores."""
    count = int(generator.integers(1, 4))
    corner = generator.uniform(0, 0.6, (count, 2))
    truth = np.column_stack([generator.integers(0, 3, count), corner, corner + 0.3])
    rows = [[row[0], generator.uniform(0.3, 1.0), *(row[1:] + generator.uniform(-0.03, 0.03, 4))]
            for row in truth if generator.uniform() < 0.7]
    if generator.uniform() < 0.5:
        rows.append([generator.integers(0, 3), generator.uniform(0.3, 1.0), 0.7, 0.7, 0.95, 0.95])
    return found(*rows), truth


def _results(images: int, seed: int = 3) -> np.ndarray:
    generator = np.random.default_rng(seed)
    scenes = [_scene(generator) for _ in range(images)]
    return KIND.per_sample([scene[0] for scene in scenes], [scene[1] for scene in scenes])


def test_the_interval_holds_the_metric_narrows_with_more_images_and_repeats() -> None:
    few, many = _results(30), _results(480)
    for results in (few, many):
        low, high = KIND.interval(results)
        assert low < KIND.metric(results) < high
    few_low, few_high = KIND.interval(few)
    many_low, many_high = KIND.interval(many)
    assert many_high - many_low < 0.6 * (few_high - few_low)
    # Seeded: the same results, the same interval; another seed, another one.
    assert KIND.interval(few) == (few_low, few_high)
    assert detection.bootstrap_interval(few, seed=1) != (few_low, few_high)
    # The health check's one-sided z reads the 5th and 95th percentiles: inside.
    check_low, check_high = KIND.interval(few, CHECK_Z)
    assert few_low < check_low and check_high < few_high
    assert KIND.interval(np.array([], dtype=object)) == (0.0, 1.0)


def test_the_interval_is_widened_to_hold_the_metric() -> None:
    """One resample is an interval of one point, seldom the metric itself: the interval
    then reaches to the metric (as a percentile interval of a biased statistic, on few
    images, can sit beside it)."""
    results = _results(30)
    headline = KIND.metric(results)
    low, high = detection.bootstrap_interval(results, resamples=1)
    assert low <= headline <= high and headline in (low, high) and low < high


def test_the_interval_is_the_percentiles_of_the_resampled_map50() -> None:
    """Recomputed the slow way: each resample's images concatenated and scored."""
    results = _results(12)
    generator = np.random.default_rng(detection.SEED)
    maps = []
    for _ in range(200):
        picked = generator.integers(0, len(results), len(results))
        maps.append(detection.scores([results[i] for i in picked]).map50)
    expected = np.percentile(maps, [2.5, 97.5])
    found_low, found_high = detection.bootstrap_interval(results, resamples=200)
    headline = KIND.metric(results)
    assert (found_low, found_high) == pytest.approx((min(expected[0], headline),
                                                     max(expected[1], headline)), abs=1e-12)


# --- agreement --------------------------------------------------------------------------


def test_agreement_is_the_share_of_boxes_both_models_found() -> None:
    reference = [found([0, 0.9, 0.1, 0.1, 0.3, 0.3], [1, 0.8, 0.5, 0.5, 0.8, 0.8]), found()]
    assert KIND.agreement(reference, reference) == 1.0
    # One box lost: 2 * 1 / (1 + 2).
    assert KIND.agreement([reference[0][:1], found()], reference) == pytest.approx(2 / 3)
    # A box of another class where the reference has one, and one extra box: no match
    # for the first; 2 * 1 / (3 + 2).
    changed = [found([0, 0.9, 0.1, 0.1, 0.3, 0.3], [2, 0.8, 0.5, 0.5, 0.8, 0.8]),
               found([0, 0.5, 0.0, 0.0, 0.1, 0.1])]
    assert KIND.agreement(changed, reference) == pytest.approx(2 / 5)
    assert KIND.agreement([found(), found()], [found(), found()]) == 1.0
    assert KIND.agreement([found()], [found([0, 0.9, 0.1, 0.1, 0.3, 0.3])]) == 0.0


# --- registry and shipping --------------------------------------------------------------


def test_the_registry_finds_detection_and_ships_it_with_the_device_package(tmp_path: Path) -> None:
    registry = device_code.task_kinds()
    assert registry.get("detection") is KIND
    assert registry.of_spec({"task": "detection"}) is KIND
    assert "detection" in registry.names()
    assert "kinds/detection.py" in {inside for _, inside in device_code.package_files()}
    placed = device_code.ship(tmp_path, ("harness",))
    assert "edgeflow_device/kinds/detection.py" in placed
    # On a board: the shipped package alone (no edgeflow on the path) decodes and scores.
    program = ("import numpy as np\nfrom edgeflow_device import kinds\n"
               "kind = kinds.get('detection')\n"
               "output = np.full((1, 2, 2, 6), -10.0); output[0, 1, 1, :5] = [5, 0, 0, 0, 0]\n"
               "boxes = kind.decode(output)\n"
               "print(boxes.round(4).tolist(), kind.metric(kind.per_sample("
               "[boxes], [np.array([[0, 0.5, 0.5, 1.0, 1.0]])])))\n")
    run = subprocess.run([sys.executable, "-c", program], cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("]] ")[1].strip() == "1.0"
    assert run.stdout.startswith("[[0.0, 0.9933, 0.5, 0.5, 1.0, 1.0]]")


def test_the_answer_places_its_boxes_through_the_predictors_mapping() -> None:
    """With ``place`` (the predictor's: fractions -> the caller's pixels) each box is what
    it returns, rows in the detections' order; without, fractions as before."""
    given = []

    def place(boxes: np.ndarray) -> np.ndarray:
        given.append(boxes.copy())
        return boxes * 100.0

    answer = KIND.answer(_grid_output(), ["cat", "dog"], place=place)
    assert answer["detections"][0]["box"] == [(2.5 / 3 - 0.25) * 100.0, 25.0, 100.0, 75.0]
    assert given[0].shape == (1, 4)
    assert KIND.locates and KIND.metric_name == "mAP@0.5"


def test_a_label_in_json_is_the_images_boxes_without_the_splits_padding() -> None:
    padded = np.array([[2.0, 0.1, 0.2, 0.3, 0.4], [-1.0, 0.0, 0.0, 0.0, 0.0]])
    label = KIND.json_label(padded)
    assert label == [[2, 0.1, 0.2, 0.3, 0.4]] and isinstance(label[0][0], int)
    assert KIND.json_label(np.full((2, 5), -1.0)) == []
    # Read back by the scoring as the same ground truth.
    assert KIND.metric(KIND.per_sample([found([2, 0.9, 0.1, 0.2, 0.3, 0.4])], [label])) == 1.0


def test_a_yolo_candidate_proposes_every_class_above_the_score_with_multi_label() -> None:
    # One candidate scoring 0.9 for class 1 and 0.3 for class 0: its best class only by
    # default (Ultralytics' predict), a box for each with multi_label (yolo val's decoding).
    output = np.zeros((1, 6, 2))
    output[0, :, 0] = [32.0, 24.0, 16.0, 12.0, 0.3, 0.9]
    spec = {"input": {"shape": [1, 3, 48, 64], "layout": "NCHW"},
            "detection": {"format": "yolo", "score_threshold": 0.2}}
    box = [0.375, 0.375, 0.625, 0.625]
    assert KIND.decode(output, spec).tolist() == [[1.0, 0.9, *box]]
    multi = {**spec, "detection": {**spec["detection"], "multi_label": True}}
    assert KIND.decode(output, multi).tolist() == [[1.0, 0.9, *box], [0.0, 0.3, *box]]
    high = {**spec, "detection": {**multi["detection"], "score_threshold": 0.5}}
    assert KIND.decode(output, high).tolist() == [[1.0, 0.9, *box]]
    with pytest.raises(ValueError, match="detection.multi_label must be true or false"):
        detection.settings({"detection": {"multi_label": "yes"}})
