"""Evaluation: how much an encoder is worth on a task, with few labels or many.

Frozen-feature probes (logistic regression, kNN), fine-tuning and frozen-encoder decoder
training, data-fraction and k-shot studies with repeated seeds, test-set bootstrap intervals
and paired comparisons, built-in baselines (raw pixels, random weights), cross-center matrices,
the data-efficiency table and an HTML report.
"""

from __future__ import annotations

from medfoundry.evaluation.bootstrap import Resampler, percentile_interval
from medfoundry.evaluation.claims import ClaimBoard
from medfoundry.evaluation.efficiency_table import Reference
from medfoundry.evaluation.features import cached_features, extract_features, write_embeddings
from medfoundry.evaluation.finetune import FinetuneConfig, FinetuneResult, finetune, score_model
from medfoundry.evaluation.paired_table import paired_difference
from medfoundry.evaluation.pixel_encoder import PixelEncoder
from medfoundry.evaluation.pretrained_encoder import PretrainedEncoder, load_encoder
from medfoundry.evaluation.probes import (
    KNNProbe,
    LabelledFeatures,
    LinearProbe,
    ProbeConfig,
    labelled_features,
    probe_metrics,
)
from medfoundry.evaluation.report import StudyOutputs, write_study_outputs
from medfoundry.evaluation.statistics import EFFICIENCY_RULE, fraction_needed, mean_confidence_interval
from medfoundry.evaluation.study_tables import StudyTables, build_study_tables

__all__ = [
    "EFFICIENCY_RULE",
    "ClaimBoard",
    "FinetuneConfig",
    "FinetuneResult",
    "KNNProbe",
    "LabelledFeatures",
    "LinearProbe",
    "PixelEncoder",
    "PretrainedEncoder",
    "ProbeConfig",
    "Reference",
    "Resampler",
    "StudyOutputs",
    "StudyTables",
    "build_study_tables",
    "cached_features",
    "extract_features",
    "finetune",
    "fraction_needed",
    "labelled_features",
    "load_encoder",
    "mean_confidence_interval",
    "paired_difference",
    "percentile_interval",
    "probe_metrics",
    "score_model",
    "write_embeddings",
    "write_study_outputs",
]
