"""Evaluation: how much an encoder is worth on a task, with few labels or many.

Frozen-feature probes (logistic regression, kNN), fine-tuning and frozen-encoder decoder
training, data-fraction studies with repeated seeds and confidence intervals, cross-center
matrices, the data-efficiency table and an HTML report.
"""

from __future__ import annotations

from medfoundry.evaluation.features import cached_features, extract_features, write_embeddings
from medfoundry.evaluation.finetune import FinetuneConfig, FinetuneResult, evaluate_model, finetune
from medfoundry.evaluation.pretrained_encoder import PretrainedEncoder, load_encoder
from medfoundry.evaluation.probes import (
    KNNProbe,
    LabelledFeatures,
    LinearProbe,
    ProbeConfig,
    labelled_features,
    probe_metrics,
)
from medfoundry.evaluation.report import write_study_outputs
from medfoundry.evaluation.statistics import data_efficiency, mean_confidence_interval, summarize

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "KNNProbe",
    "LabelledFeatures",
    "LinearProbe",
    "PretrainedEncoder",
    "ProbeConfig",
    "cached_features",
    "data_efficiency",
    "evaluate_model",
    "extract_features",
    "finetune",
    "labelled_features",
    "load_encoder",
    "mean_confidence_interval",
    "probe_metrics",
    "summarize",
    "write_embeddings",
    "write_study_outputs",
]
