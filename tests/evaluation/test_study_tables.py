"""The plain-language saving sentence and the report's data-efficiency table, on the rows where
the encoder reached its reference with no labels to spare, had no reference count, or never
reached it."""

from __future__ import annotations

import math
from typing import Any

from medfoundry.evaluation.efficiency_table import saving_sentence
from medfoundry.evaluation.report import _efficiency_table

ROW: dict[str, Any] = {
    "encoder": "pretrained",
    "task": "nuclei",
    "mode": "linear",
    "metric": "auroc",
    "reference": "random linear @ 10%",
    "reference_score": 0.8,
    "reference_n_train": 60,
    "fraction_needed": 0.6,
    "n_train_needed": 360,
    "score_at_fraction_needed": 0.81,
    "difference_at_fraction_needed": 0.01,
    "diff_ci95_low": 0.0,
    "diff_ci95_high": 0.02,
    "full_data_score": 0.9,
}


def test_more_labels_than_a_partial_reference_saves_none() -> None:
    sentence = saving_sentence(ROW)
    assert "no labels saved (300 more than the reference used)" in sentence
    assert "-" not in sentence.split("saved")[0].split("(n=360)")[1] and "nan" not in sentence


def test_without_a_reference_count_the_saving_is_unknown_not_nan() -> None:
    sentence = saving_sentence({**ROW, "reference_n_train": math.nan})
    assert "nan" not in sentence and "how many labels that saves is unknown" in sentence


def test_fewer_labels_still_saves_them() -> None:
    assert "24 labels (40%) saved" in saving_sentence({**ROW, "n_train_needed": 36, "fraction_needed": 0.06})


def test_the_efficiency_table_says_not_reached_instead_of_nan() -> None:
    unreached = {
        **ROW,
        "fraction_needed": math.nan,
        "n_train_needed": math.nan,
        "score_at_fraction_needed": math.nan,
        "difference_at_fraction_needed": math.nan,
        "diff_ci95_low": math.nan,
        "diff_ci95_high": math.nan,
    }
    table = _efficiency_table([unreached])
    assert "nan" not in table and table.count("not reached") == 2
