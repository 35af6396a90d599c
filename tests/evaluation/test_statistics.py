"""Means and intervals over seeds, bootstrap intervals, paired differences, identical subsets and
the data-efficiency rule, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfoundry.evaluation.bootstrap import Resampler, group_notes, percentile_interval
from medfoundry.evaluation.paired_table import paired_difference, paired_rows
from medfoundry.evaluation.statistics import fraction_needed, identical_fractions, mean_confidence_interval
from medfoundry.evaluation.summary_table import SeedGroup


def test_mean_std_and_t_interval_by_hand() -> None:
    mean, std, low, high = mean_confidence_interval([0.70, 0.75, 0.90])
    assert mean == pytest.approx(0.78333333333)
    # squared deviations 0.0069444 + 0.0011111 + 0.0136111 = 0.0216667; / (n - 1) -> 0.0108333
    assert std == pytest.approx(math.sqrt(0.0108333333), rel=1e-6)
    half = 4.302652730 * std / math.sqrt(3)  # t_{0.975, 2} from a t table
    assert (low, high) == (pytest.approx(mean - half), pytest.approx(min(mean + half, 1.0)))
    assert high == 1.0  # 0.783 + 0.259 would be an AUROC above 1: clipped to the metric's range
    assert mean_confidence_interval([0.70, 0.75, 0.90], bounds=None)[3] == pytest.approx(mean + half)


def test_nan_values_are_left_out_and_one_value_has_no_interval() -> None:
    assert mean_confidence_interval([0.5, math.nan])[0] == 0.5
    assert all(math.isnan(v) for v in mean_confidence_interval([0.5])[1:])
    assert all(math.isnan(v) for v in mean_confidence_interval([math.nan]))


def test_resamples_are_reproducible_and_shared_by_test_set() -> None:
    resampler = Resampler(1000, seed=3)
    first = np.vstack(list(resampler.weights(50, "organ/all")))
    again = np.vstack(list(Resampler(1000, seed=3).weights(50, "organ/all")))
    other = np.vstack(list(resampler.weights(50, "organ/north")))
    assert first.shape == (1000, 50) and (first.sum(axis=1) == 50).all()
    assert (first == again).all() and not (first == other).all()
    # each item is drawn with probability 1/n per draw: about one copy per resample on average
    assert first.mean() == pytest.approx(1.0) and first.var() == pytest.approx(1 - 1 / 50, rel=0.05)


def test_grouped_resamples_draw_whole_groups() -> None:
    groups = np.repeat(np.arange(10), np.arange(1, 11))  # 10 groups of 1 to 10 images: 55 items
    weights = np.vstack(list(Resampler(1000, seed=3).weights(55, "organ/all", groups)))
    first = np.searchsorted(groups, np.arange(10))  # each group's first item
    assert (weights == weights[:, first][:, groups]).all()  # an image counts as often as its group
    assert (weights[:, first].sum(axis=1) == 10).all()  # ten groups drawn per resample
    # a group of its own per image, or unit "item": the images' resamples, exactly
    plain = np.vstack(list(Resampler(1000, seed=3).weights(55, "organ/all")))
    assert (np.vstack(list(Resampler(1000, seed=3).weights(55, "organ/all", np.arange(55)))) == plain).all()
    by_item = Resampler(1000, seed=3, unit="item")
    assert (np.vstack(list(by_item.weights(55, "organ/all", groups))) == plain).all()
    # one group: nothing between groups to draw (every resample would be the whole test set);
    # three: 10 distinct resamples. The items are resampled, and the study says what that means
    for few in (np.zeros(55, dtype=int), groups % 3):
        assert (np.vstack(list(Resampler(1000, seed=3).weights(55, "organ/all", few))) == plain).all()
    assert "come from one group" in group_notes("organ/all", np.zeros(55, dtype=int))[0]
    assert "come from only 3 groups" in group_notes("organ/all", groups % 3)[0]
    four = np.vstack(list(Resampler(1000, seed=3).weights(55, "organ/all", groups % 4)))
    assert all(np.ptp(four[:, groups % 4 == g], axis=1).max() == 0 for g in range(4))  # drawn whole
    assert "from only 4 groups" in group_notes("organ/all", groups % 4)[0]
    assert group_notes("organ/all", groups) == []  # ten groups: enough, no note
    assert group_notes("organ/all", groups % 4, unit="item") == []
    with pytest.raises(ValueError, match="54 item groups for 55 items"):
        next(Resampler().weights(55, "organ/all", groups[1:]))


def test_copies_within_a_group_do_not_narrow_the_grouped_interval() -> None:
    # 40 patients, each imaged 8 times identically: the data hold 40 independent values, not 320
    values = np.random.default_rng(0).random(40)
    copies, groups = np.repeat(values, 8), np.repeat(np.arange(40), 8)

    def spread(resampler: Resampler, x: np.ndarray, g: np.ndarray | None) -> float:
        w = np.vstack(list(resampler.weights(len(x), "scans/all", g)))
        return float(np.std(w @ x / w.sum(axis=1)))

    once = spread(Resampler(2000, unit="item"), values, None)
    assert spread(Resampler(2000), copies, groups) == pytest.approx(once, rel=0.1)
    assert spread(Resampler(2000, unit="item"), copies, groups) < 0.5 * once  # about 1/sqrt(8)


def test_percentile_interval_is_clipped_and_needs_finite_values() -> None:
    values = np.concatenate([np.linspace(0.9, 1.1, 200), [np.nan] * 10])
    low, high = percentile_interval(values)
    assert low == pytest.approx(np.percentile(np.linspace(0.9, 1.1, 200), 2.5)) and high == 1.0
    assert percentile_interval(np.linspace(-1.5, 0.5, 100), (-1.0, 1.0))[0] == -1.0
    assert all(math.isnan(v) for v in percentile_interval(np.array([0.5] + [np.nan] * 9)))


def test_paired_difference_of_an_encoder_with_itself_is_exactly_zero() -> None:
    rng = np.random.default_rng(0)
    seeds = [(0.7, rng.random(1000)), (0.8, rng.random(1000))]
    assert paired_difference(seeds, seeds) == (0.0, 0.0, 0.0)
    shifted = [(value + 0.1, scores + 0.1) for value, scores in seeds]
    difference, low, high = paired_difference(shifted, seeds)
    assert difference == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    # unpaired noise would give a wide interval; paired, the shared item noise cancels
    assert math.isnan(paired_difference([(0.7, None)], [(0.6, rng.random(1000))])[1])


def test_the_paired_table_counts_the_seeds_on_which_the_encoder_scored_higher() -> None:
    # three draws of the labels: a large mean gain carried by one draw where the reference
    # collapsed (the demo's face task at 10 %: 0.952 / 0.880 / 0.818 against 0.895 / 0.907 / 0.171)
    rng = np.random.default_rng(0)
    items = [rng.random(200) for _ in range(3)]
    released = [0.952, 0.880, 0.818]
    random_init = [0.895, 0.907, 0.171]

    def group(values: list[float]) -> SeedGroup:
        return SeedGroup({seed: (v, items[seed] + v, 6) for seed, v in enumerate(values)})

    key = ("heldout_face_seg", "frozen-decoder", 0.1, "", "all", "all", "mean_dice")
    groups = {("released", *key): group(released), ("random", *key): group(random_init)}
    rows = paired_rows(
        groups, targets=["random"], reference_encoder="random", reference_mode=None, metric="mean_dice"
    )
    (row,) = rows
    assert row["difference"] == pytest.approx(np.mean(np.subtract(released, random_init)))  # +0.226
    assert (row["n_pairs"], row["n_better"]) == (3, 2)  # not every draw: seed 1 is worse
    # the interval resamples the draws too: +0.226 on items alone would read as certain, but a
    # resample of the draws that takes seed 1 thrice gives -0.027, one that takes seed 2 +0.647
    assert row["diff_ci95_low"] < 0 < row["diff_ci95_high"]
    assert row["diff_ci95_high"] == pytest.approx(0.647, abs=0.01)


def test_identical_subsets_are_found_per_seed() -> None:
    sizes = {
        0.01: {0: 5, 1: 5},
        0.05: {0: 5, 1: 6},
        0.1: {0: 10, 1: 10},
        0.11: {0: 10, 1: 10},
        1.0: {0: 99, 1: 99},
    }
    assert identical_fractions(sizes) == [[0.1, 0.11]]  # 1% and 5% differ at seed 1


def test_fraction_needed_is_the_smallest_from_which_every_larger_fraction_reaches() -> None:
    assert fraction_needed({0.01: True, 0.1: False, 0.5: True, 1.0: True}) == 0.5
    assert fraction_needed({0.01: True, 0.1: True, 1.0: True}) == 0.01
    assert math.isnan(fraction_needed({0.01: True, 1.0: False}))
    # 1% and 5% are one subset: no saving is read from the smaller name
    assert fraction_needed({0.01: True, 0.05: True, 0.5: True, 1.0: True}, [[0.01, 0.05]]) == 0.05
    # a fraction that is the reference's own subset cannot claim a saving either
    assert fraction_needed({0.5: True, 1.0: True}, [[0.5, 1.0]]) == 1.0
