"""Checks that need a sample's decoded pixels, run once when the sample is cached, and the
merging of their lines per file."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medfoundry.data.record import Pixels, Record, TargetKind
from medfoundry.data.sources.base import EDGE_TOLERANCE_PX
from medfoundry.errors import number_ranges

__all__ = ["MIN_IMAGE_SIDE_PX", "merge_frames", "sample_problems"]

MIN_IMAGE_SIDE_PX = 4
"""Smaller images hold nothing to learn from (a 1x1 image is one colour): they are errors.
``validate-data`` also warns about images that are upsampled a lot to the cached size."""


def sample_problems(
    record: Record, pixels: Pixels, target: TargetKind, *, num_classes: int, ignore_index: int
) -> list[str]:
    """What is wrong with a decoded sample: image too small, mask size and values, boxes outside
    the image.

    Args:
        record: The sample.
        pixels: Its decoded image and mask.
        target: What the task needs.
        num_classes: Valid mask values are ``0 .. num_classes - 1`` and ``ignore_index``.
        ignore_index: Mask value of unlabelled pixels.

    Returns:
        One line per problem, naming the file (and frame); empty when the sample is fine.
    """
    height, width = pixels.image.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE_PX:
        return [
            f"{record.where}: image is {width}x{height} pixels (width x height); at least "
            f"{MIN_IMAGE_SIDE_PX}x{MIN_IMAGE_SIDE_PX} are needed"
        ]
    problems = []
    if target == "mask" and pixels.mask is not None:
        mask = pixels.mask
        if mask.shape != (height, width):
            return [
                f"{record.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but image {record.where} is "
                f"{width}x{height} (width x height)"
            ]
        bad = sorted(set(np.unique(mask).tolist()) - set(range(num_classes)) - {ignore_index})
        if bad:
            frame = "" if record.frame is None else f" [{record.frame}]"
            problems.append(
                f"{record.mask}{frame}: mask value(s) {bad[:10]} outside the {num_classes} declared "
                f"classes (0..{num_classes - 1}) and ignore_index {ignore_index}"
            )
    for i, box in enumerate(record.boxes or ()):
        t = EDGE_TOLERANCE_PX
        if box.x1 < -t or box.y1 < -t or box.x2 > width + t or box.y2 > height + t:
            problems.append(
                f"{record.where}, row {record.row}: box {i} {list(box[:4])} lies outside the image "
                f"({width}x{height})"
            )
    return problems


def merge_frames(failures: Sequence[tuple[Record, list[str]]]) -> list[str]:
    """One line per problem of a file, not per sample: the slices of a volume (frames of a file)
    that fail alike become one line naming their positions (``ct.nii.gz [0-11]: ...``). Files
    that fail alike are merged later, over all splits (``errors.merge_subjects``)."""
    positions: dict[tuple[str, str], list[int]] = {}  # (file, problem) -> failing frames
    for record, lines in failures:
        for line in lines:
            file, frame, problem = _subject(line, record)
            positions.setdefault((file, problem), []).extend([] if frame is None else [frame])
    lines = []
    for (file, problem), frames in positions.items():
        at = f" [{number_ranges(frames)}]" if frames else ""
        lines.append(f"{file}{at}: {problem}" if file else problem)
    return lines


def _subject(line: str, record: Record) -> tuple[str, int | None, str]:
    """Split a problem line into the file it names (with an array member), the frame, and the rest."""
    candidates: list[tuple[str, str, int | None]] = []
    if record.frame is not None:
        member = f" [{record.member}]" if record.member else ""
        candidates.append((record.where, f"{record.image}{member}", record.frame))
        if record.mask is not None:
            candidates.append((f"{record.mask} [{record.frame}]", str(record.mask), record.frame))
    candidates += [(str(path), str(path), None) for path in (record.mask, record.image) if path is not None]
    for prefix, file, frame in candidates:
        if line.startswith(f"{prefix}: "):
            return file, frame, line[len(prefix) + 2 :]
    return "", None, line
