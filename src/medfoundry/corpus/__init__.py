"""The offline pretraining corpus: real images that ship inside packages, sliced, tiled and labelled.

``build_corpus(DIR)`` (``medfoundry corpus DIR``) writes PNG images, CSV manifests,
``tasks.yaml`` (pretraining tasks), ``labelled_tasks.yaml`` (those with labels),
``heldout_tasks.yaml`` (held-out evaluation tasks) and ``corpus.json`` (sources, versions,
counts, the SHA-256 of every image's pixels). Every source is in ``sources``, every label rule
in ``labels``; docs/corpus.md describes both. ``selections`` names smaller corpora built by the
same code (``medfoundry demo-data``: the ``small`` one).
"""

from __future__ import annotations

from medfoundry.corpus.build import MIN_SOURCES, CorpusBuild, build_corpus, corpus_fingerprint
from medfoundry.corpus.database import content_hash
from medfoundry.corpus.settings import CorpusSettings
from medfoundry.corpus.sources import SOURCES, Source
from medfoundry.corpus.tasks import MASKED_IMAGE_TASK, TASKS, TaskDef

__all__ = [
    "MASKED_IMAGE_TASK",
    "MIN_SOURCES",
    "SOURCES",
    "TASKS",
    "CorpusBuild",
    "CorpusSettings",
    "Source",
    "TaskDef",
    "build_corpus",
    "content_hash",
    "corpus_fingerprint",
]
