"""Modality and body part of a DICOM image, from its header.

- ``dicom_modality``: the ``Modality`` attribute; ``CR`` and ``DX`` merged as ``radiograph``,
  ``RTIMAGE`` (a radiotherapy portal image) as ``rt_image``.
- ``dicom_body_part``: the ``BodyPartExamined`` attribute, where present: ``HEAD`` and
  ``BRAIN`` merged as ``head``, ``ABDOMEN`` and ``PANCREAS`` as ``abdomen``; files without it
  are not in this task.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BODY_PARTS", "MODALITY_CLASSES", "body_part_class", "modality_class"]

MODALITY_CLASSES = ("radiograph", "CT", "MR", "US", "NM", "rt_image")
_MODALITY = {"CR": "radiograph", "DX": "radiograph", "CT": "CT", "MR": "MR", "US": "US", "NM": "NM"}
_MODALITY["RTIMAGE"] = "rt_image"
BODY_PARTS = ("chest", "extremity", "head", "neck", "abdomen", "whole_body")
_BODY_PART = {
    "CHEST": "chest",
    "EXTREMITY": "extremity",
    "HEAD": "head",
    "BRAIN": "head",
    "NECK": "neck",
    "ABDOMEN": "abdomen",
    "PANCREAS": "abdomen",
    "WHOLE BODY": "whole_body",
}


def modality_class(header: Any) -> str | None:
    """The ``dicom_modality`` class of a pydicom header, ``None`` for other modalities."""
    return _MODALITY.get(str(header.get("Modality", "")).upper())


def body_part_class(header: Any) -> str | None:
    """The ``dicom_body_part`` class of a pydicom header, ``None`` without a known body part."""
    return _BODY_PART.get(str(header.get("BodyPartExamined", "")).strip().upper())
