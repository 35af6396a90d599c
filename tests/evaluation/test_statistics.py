"""Means, confidence intervals and the data-efficiency table, against hand-computed values."""

from __future__ import annotations

import math
from typing import Any

import pytest

from medfoundry.evaluation.statistics import data_efficiency, mean_confidence_interval, summarize


def _row(
    encoder: str, mode: str, fraction: float, seed: int, value: float, metric: str = "auroc"
) -> dict[str, Any]:
    return {
        "encoder": encoder,
        "task": "t",
        "mode": mode,
        "fraction": fraction,
        "seed": seed,
        "n_train": int(100 * fraction),
        "train_center": "all",
        "test_center": "all",
        "metric": metric,
        "value": value,
    }


def test_mean_std_and_t_interval_by_hand() -> None:
    mean, std, low, high = mean_confidence_interval([0.70, 0.75, 0.90])
    assert mean == pytest.approx(0.78333333333)
    # squared deviations 0.0069444 + 0.0011111 + 0.0136111 = 0.0216667; / (n - 1) -> 0.0108333
    assert std == pytest.approx(math.sqrt(0.0108333333), rel=1e-6)
    half = 4.302652730 * std / math.sqrt(3)  # t_{0.975, 2} from a t table
    assert (low, high) == (pytest.approx(mean - half), pytest.approx(mean + half))


def test_nan_values_are_left_out_and_one_value_has_no_interval() -> None:
    assert mean_confidence_interval([0.5, math.nan])[0] == 0.5
    assert all(math.isnan(v) for v in mean_confidence_interval([0.5])[1:])
    assert all(math.isnan(v) for v in mean_confidence_interval([math.nan]))


def test_summarize_groups_seeds() -> None:
    rows = [_row("a", "linear", 0.1, s, v) for s, v in enumerate([0.6, 0.8])] + [
        _row("a", "linear", 1.0, 0, 0.9)
    ]
    summary = {r["fraction"]: r for r in summarize(rows)}
    assert summary[0.1]["mean"] == pytest.approx(0.7) and summary[0.1]["n_seeds"] == 2
    assert summary[0.1]["std"] == pytest.approx(math.sqrt(0.02))
    assert summary[0.1]["n_train"] == 10
    assert summary[1.0]["n_seeds"] == 1 and math.isnan(summary[1.0]["ci95_low"])


def test_efficiency_is_the_smallest_fraction_reaching_the_reference() -> None:
    curves = {
        ("random", "linear"): {0.01: 0.55, 0.1: 0.62, 1.0: 0.70},
        ("ours", "linear"): {0.01: 0.71, 0.1: 0.69, 1.0: 0.80},  # not monotone: 1% already reaches 0.70
        ("ours", "knn"): {0.01: 0.50, 0.1: 0.60, 1.0: 0.66},
        ("random", "knn"): {0.01: 0.52, 0.1: 0.58, 1.0: 0.67},
    }
    rows = [
        _row(encoder, mode, f, seed, value)
        for (encoder, mode), curve in curves.items()
        for f, value in curve.items()
        for seed in (0, 1)
    ]
    summary = summarize(rows + [_row("ours", "linear", 1.0, 0, 0.1, metric="accuracy")])
    table = {(r["encoder"], r["mode"]): r for r in data_efficiency(summary, {"t": "auroc"}, "random")}
    assert table["ours", "linear"]["fraction_needed"] == 0.01
    assert table["ours", "linear"]["reference_score"] == pytest.approx(0.70)
    assert table["ours", "linear"]["full_data_score"] == pytest.approx(0.80)
    assert math.isnan(table["ours", "knn"]["fraction_needed"])  # 0.66 < 0.67: never reached
    assert table["random", "linear"]["fraction_needed"] == 1.0

    # against one fixed reference mode (e.g. "match the random linear probe at 100%")
    fixed = {
        (r["encoder"], r["mode"]): r for r in data_efficiency(summary, {"t": "auroc"}, "random", "linear")
    }
    assert fixed["ours", "knn"]["reference"] == "random linear @ 100%"
    assert math.isnan(fixed["ours", "knn"]["fraction_needed"])
    at_tenth = data_efficiency(summary, {"t": "auroc"}, "random", None, 0.1)
    assert {(r["encoder"], r["mode"]): r["fraction_needed"] for r in at_tenth}["ours", "knn"] == 0.1
