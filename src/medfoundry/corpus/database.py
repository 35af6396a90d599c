"""Writing the corpus database: PNG images and masks, CSV manifests, task lists, the manifest.

Each image is written once (as an 8-bit PNG, gray or RGB, zlib level 1) however many tasks
label it, and identified by the SHA-256 of its decoded pixels (``content_hash``); an image
whose pixels equal one already written is dropped and counted. Splits: held-out images carry theirs;
every other image's split follows its group (subject, volume, slab, file), so a group never
straddles train and validation, and an image is in the same split in every task, with two
task-local exceptions: a class whose groups all drew validation trains on its largest group,
and a task whose groups all drew training validates on its smallest group. With a test share
(``CorpusSettings.test_percent``, 0 for the full corpus) groups also draw ``test``, a task whose
groups all drew other splits tests on its smallest spare training group, and no image that is
a test image in any task is in ``all_images``: pretraining never sees a test image.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medfoundry.corpus.files import save_png, write_csv
from medfoundry.corpus.image import CorpusImage, Label
from medfoundry.corpus.tasks import MASKED_IMAGE_TASK, TASKS, TaskDef
from medfoundry.errors import DataError

__all__ = ["CorpusWriter", "content_hash"]


def content_hash(pixels: np.ndarray) -> str:
    """SHA-256 of a decoded pixel array (its dtype and shape, then its bytes in C order)."""
    digest = hashlib.sha256(f"{pixels.dtype.str}{pixels.shape}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


class CorpusWriter:
    """Collects images into a database folder; ``finish`` writes manifests and task lists.

    Args:
        root: Folder to write into (it exists and is empty).
        heldout_sources: Sources whose images only held-out tasks may use.
        val_percent: Share of pretraining groups that go to validation.
        test_percent: Share of pretraining groups that go to test.
        seed: Seeds the assignment of groups to splits.
    """

    def __init__(
        self, root: Path, heldout_sources: set[str], val_percent: int, *, test_percent: int = 0, seed: int
    ) -> None:
        self.root = root
        self.heldout_sources = heldout_sources
        self.val_percent = val_percent
        self.test_percent = test_percent
        self.seed = seed
        self.images: dict[str, dict[str, Any]] = {}  # relative path -> manifest entry
        self.hashes: dict[str, str] = {}  # content hash -> relative path
        self.rows: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.duplicates: Counter[str] = Counter()

    def add(self, image: CorpusImage) -> None:
        """Write one image (and its masks) and record its rows in every task it has a label for."""
        heldout = image.source in self.heldout_sources
        self._check(image, heldout)
        digest = content_hash(image.pixels)
        if digest in self.hashes:
            self.duplicates[image.source] += 1
            return
        path = f"images/{image.source}/{image.name}.png"
        save_png(image.pixels, self.root / path)
        self.hashes[digest] = path
        self.images[path] = {"sha256": digest, "source": image.source, "group": image.group}
        split = image.split or ("" if heldout else self._group_split(image.group))
        for task, label in image.labels.items():
            self.rows[task].append(self._row(TASKS[task], image, path, label, split))
        if not heldout:
            self.rows[MASKED_IMAGE_TASK].append({"image": path, "split": split, "group": image.group})

    def finish(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Write ``<task>.csv``, ``tasks.yaml``, ``heldout_tasks.yaml`` and ``corpus.json``.

        Returns:
            The manifest as written.
        """
        summary: dict[str, Any] = {}
        self._settle_splits()
        for name, rows in sorted(self.rows.items()):
            write_csv(self.root / f"{name}.csv", rows)
            summary[name] = _task_summary(TASKS[name], rows)
        written = [TASKS[name] for name in TASKS if name in self.rows]
        _write_tasks(self.root / "tasks.yaml", [t for t in written if not t.heldout])
        _write_tasks(self.root / "labelled_tasks.yaml", [t for t in written if not t.heldout and t.classes])
        _write_tasks(self.root / "heldout_tasks.yaml", [t for t in written if t.heldout])
        per_source = Counter(entry["source"] for entry in self.images.values())
        for name, entry in manifest["sources"].items():
            entry["images"] = per_source.get(name, 0)
            entry["duplicates_dropped"] = self.duplicates.get(name, 0)
        manifest.update(tasks=summary, images=self.images)
        manifest["total_images"] = len(self.images)
        manifest["pretraining_images"] = sum(
            1 for e in self.images.values() if e["source"] not in self.heldout_sources
        )
        # written last: a folder without it (or with another fingerprint) is never trusted
        (self.root / "corpus.json").write_text(json.dumps(manifest, indent=1, sort_keys=False))
        return manifest

    def _settle_splits(self) -> None:
        """Every pretraining task trains on each of its classes and has validation (and, with a
        test share, test) rows; ``all_images`` keeps no image that a task tests on."""
        for name, rows in self.rows.items():
            if TASKS[name].heldout:
                continue
            _ensure_train_classes(rows)
            _ensure_split(rows, "val")
            if not any(r["split"] == "val" for r in rows):  # too few groups: validation first
                for row in rows:
                    row["split"] = "val" if row["split"] == "test" else row["split"]
            if self.test_percent and name != MASKED_IMAGE_TASK:
                _ensure_split(rows, "test", spare_only=True)
        tested = {r["image"] for rows in self.rows.values() for r in rows if r["split"] == "test"}
        if MASKED_IMAGE_TASK in self.rows:
            kept = [r for r in self.rows[MASKED_IMAGE_TASK] if r["image"] not in tested]
            self.rows[MASKED_IMAGE_TASK] = kept

    def _check(self, image: CorpusImage, heldout: bool) -> None:
        if image.pixels.dtype != np.uint8 or image.pixels.ndim not in (2, 3):
            raise DataError(f"{image.source}/{image.name}: expected (H, W[, 3]) uint8 pixels")
        if heldout and image.split is None:
            raise DataError(f"{image.source}/{image.name}: a held-out image needs its split")
        for task in image.labels:
            if task not in TASKS:
                raise DataError(f"{image.source}/{image.name}: unknown corpus task '{task}'")
            if TASKS[task].heldout != heldout:
                kind = "held-out" if heldout else "pretraining"
                raise DataError(f"{image.source}/{image.name}: a {kind} image labelled for task '{task}'")

    def _group_split(self, group: str) -> str:
        draw = zlib.crc32(f"{self.seed}:{group}".encode()) % 100
        if draw < self.val_percent:
            return "val"
        return "test" if draw < self.val_percent + self.test_percent else "train"

    def _row(self, task: TaskDef, image: CorpusImage, path: str, label: Label, split: str) -> dict[str, str]:
        row = {"image": path, "split": split, "group": image.group, **image.columns}
        if task.type == "classification":
            if label not in task.classes:
                raise DataError(f"{path}: label {label!r} is not a class of task '{task.name}'")
            row["label"] = str(label)
        elif task.type == "segmentation":
            mask = np.asarray(label)
            if mask.shape != image.pixels.shape[:2] or int(mask.max()) >= len(task.classes):
                raise DataError(f"{path}: mask for '{task.name}' has shape {mask.shape} or values too high")
            mask_path = f"masks/{task.name}/{image.source}/{image.name}.png"
            save_png(mask.astype(np.uint8), self.root / mask_path)
            row["mask"] = mask_path
        elif task.type == "detection":
            row["boxes"] = json.dumps([list(box) for box in label])
        return row


def _ensure_train_classes(rows: list[dict[str, str]]) -> None:
    """A class whose groups all drew another split trains on its largest group (in this task
    only); so does a task without classes none of whose groups drew ``train``."""
    trained = {r.get("label", "") for r in rows if r["split"] == "train"}
    for label in sorted({r.get("label", "") for r in rows} - trained):
        sizes = Counter(r["group"] for r in rows if r.get("label", "") == label)
        group = max(sorted(sizes), key=lambda g: sizes[g])
        for row in rows:
            if row["group"] == group:
                row["split"] = "train"


def _ensure_split(rows: list[dict[str, str]], split: str, *, spare_only: bool = False) -> None:
    """A pretraining task needs ``split`` rows: when none of its groups drew it, its smallest
    training group whose classes other training groups also show takes it (ties: name order);
    failing that (every class in one group), its smallest training group, unless ``spare_only``.
    Its only training group is never taken."""
    if any(r["split"] == split for r in rows):
        return
    sizes = Counter(r["group"] for r in rows if r["split"] == "train")
    labels: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row["split"] == "train":
            labels[row["group"]].add(row.get("label", ""))
    spare = [
        g
        for g in sorted(sizes)
        if all(any(label in labels[o] for o in sizes if o != g) for label in labels[g])
    ]
    if len(sizes) < 2 or (spare_only and not spare):
        return  # never its last training group
    group = min(spare or sorted(sizes), key=lambda g: sizes[g])
    for row in rows:
        if row["group"] == group:
            row["split"] = split


def _task_summary(task: TaskDef, rows: list[dict[str, str]]) -> dict[str, Any]:
    splits = Counter(r["split"] or "unsplit" for r in rows)
    summary: dict[str, Any] = {
        "type": task.type,
        "classes": list(task.classes),
        "heldout": task.heldout,
        "images": len(rows),
        "splits": dict(sorted(splits.items())),
        "groups": len({r["group"] for r in rows}),
    }
    if task.type == "classification":
        summary["class_counts"] = dict(Counter(r["label"] for r in rows).most_common())
    if task.type == "detection":
        summary["boxes"] = sum(len(json.loads(r["boxes"])) for r in rows)
    return summary


def _write_tasks(path: Path, tasks: list[TaskDef]) -> None:
    entries = [
        {
            "name": t.name,
            "type": t.type,
            **({"classes": list(t.classes)} if t.classes else {}),
            "modality": t.modality,
            **({"augment": dict(t.augment)} if t.augment else {}),
            "source": {"path": f"{t.name}.csv"},
        }
        for t in tasks
    ]
    path.write_text(yaml.safe_dump({"tasks": entries}, sort_keys=False))
