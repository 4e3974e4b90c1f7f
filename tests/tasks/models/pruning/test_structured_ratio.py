"""Structured pruning's ratio and criterion, with values where the alternatives differ
(issue 27): a ratio other than 0.5 (where keeping ``ratio`` and keeping ``1 - ratio`` of
the filters agree), kernels whose L1 ranking differs from their L2 and max ranking, and
input channels that change the ranking."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tasks.core.errors import StepError
from tasks.models.pruning.structured import kept_filters, shrink_small_cnn


@pytest.mark.parametrize(("filters", "ratio", "kept"), [
    (8, 0.25, 6), (16, 0.75, 4), (10, 0.3, 7), (10, 0.7, 3), (12, 0.1, 11), (12, 0.9, 1),
    (3, 0.9, 1),   # round(0.3) = 0: at least one filter stays
    (1, 0.5, 1),
    (5, 0.1, 4),   # 4.5 rounds to the even 4 (Python's round), as the docstring's rule says
    (7, 0.1, 6),   # 6.3 -> 6
    (7, 0.05, 7),  # 6.65 -> 7
])
def test_the_ratio_is_the_share_of_filters_removed(filters: int, ratio: float, kept: int) -> None:
    kernel = np.random.default_rng(filters).normal(size=(3, 3, 2, filters))
    chosen = kept_filters(kernel, ratio)
    assert len(chosen) == kept
    assert chosen.tolist() == sorted(chosen.tolist()) and len(set(chosen.tolist())) == kept


def test_filters_are_ranked_by_l1_norm_over_all_taps_and_input_channels() -> None:
    # Four filters of a (1, 2, 2, 4) kernel, as (channel 0 taps, channel 1 taps):
    # 0: L1 4.0, L2 2.0, max 1.0  (many small weights)
    # 1: L1 3.0, L2 3.0, max 3.0  (one large weight: ranks first by L2 or max, last by L1)
    # 2: L1 3.5 only with channel 1 (channel 0 alone: 0.5, the lowest)
    # 3: L1 3.2, signs mixed (a signed sum would be 0.0)
    kernel = np.zeros((1, 2, 2, 4))
    kernel[0, :, 0, 0], kernel[0, :, 1, 0] = [1.0, 1.0], [1.0, -1.0]
    kernel[0, :, 0, 1] = [3.0, 0.0]
    kernel[0, :, 0, 2], kernel[0, :, 1, 2] = [0.5, 0.0], [3.0, 0.0]
    kernel[0, :, 0, 3], kernel[0, :, 1, 3] = [1.6, -1.6], [0.0, 0.0]
    assert kept_filters(kernel, 0.25).tolist() == [0, 2, 3]  # 3 kept: filter 1 goes
    assert kept_filters(kernel, 0.5).tolist() == [0, 2]
    assert kept_filters(kernel, 0.75).tolist() == [0]


def test_equal_norms_keep_the_lower_index_and_the_kept_set_comes_back_in_channel_order() -> None:
    kernel = np.zeros((1, 1, 1, 5))
    kernel[0, 0, 0] = [1.0, 2.0, 1.0, 2.0, 1.0]
    assert kept_filters(kernel, 0.6).tolist() == [1, 3]
    assert kept_filters(kernel, 0.4).tolist() == [0, 1, 3]  # of the three 1.0s, filter 0


def test_a_small_cnn_without_conv0_is_refused_naming_where_small_cnns_are_built() -> None:
    model = SimpleNamespace(name="small_cnn", layers=[SimpleNamespace(name="dense0")])
    with pytest.raises(StepError) as raised:
        shrink_small_cnn(model, 0.5)  # type: ignore[arg-type]
    assert str(raised.value) == ("model 'small_cnn' has no conv0 layer: not a small_cnn built "
                                 "by tasks.models.architectures")
