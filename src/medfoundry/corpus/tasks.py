"""The corpus's tasks: name, type, classes, and which images may appear in them.

Every rule that makes a label is in ``medfoundry.corpus.labels`` and docs/corpus.md.
Pretraining tasks go to ``tasks.yaml``; held-out tasks (never pretrained on: their sources are
kept out of every pretraining task, masked-image modelling included) to ``heldout_tasks.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

from medfoundry.corpus.labels.brain_region import HEAD_ZONES, MNI_OCTANTS
from medfoundry.corpus.labels.counts import COUNT_BINS, MEMBRANE_CLASSES
from medfoundry.corpus.labels.ct_tissue import CT_TISSUE_CLASSES
from medfoundry.corpus.labels.dicom_header import BODY_PARTS, MODALITY_CLASSES
from medfoundry.corpus.labels.slice_position import PLANES, POSITION_BINS
from medfoundry.corpus.labels.technique import TECHNIQUES

__all__ = ["MASKED_IMAGE_TASK", "TASKS", "TaskDef"]


@dataclass(frozen=True)
class TaskDef:
    """A task of the corpus database (one manifest ``<name>.csv``)."""

    name: str
    type: str
    classes: tuple[str, ...]
    modality: str
    heldout: bool = False
    augment: tuple[tuple[str, object], ...] = ()
    """Changes to a run's or a study's training augmentation for this task (``TaskSpec.augment``)."""


NO_FLIPS = (("enable_flips", False),)
"""The labels name sides (left/right, anterior/posterior, superior/inferior): a flip changes them."""


MASKED_IMAGE_TASK = "all_images"

TASKS: dict[str, TaskDef] = {
    t.name: t
    for t in (
        TaskDef("brain_tissue", "segmentation", ("background", "grey_matter", "white_matter"), "MR (T1)"),
        TaskDef(
            "bold_tissue", "segmentation", ("background", "grey_matter", "white_matter", "csf"), "MR (BOLD)"
        ),
        TaskDef("brain_region", "classification", MNI_OCTANTS, "MR (T1)", augment=NO_FLIPS),
        TaskDef("volume_plane", "classification", PLANES, "MR, CT"),
        TaskDef("slice_position", "classification", POSITION_BINS, "MR, CT"),
        TaskDef("ct_tissue", "segmentation", CT_TISSUE_CLASSES, "CT"),
        TaskDef("dicom_modality", "classification", MODALITY_CLASSES, "CR, DX, CT, MR, US, NM, RTIMAGE"),
        TaskDef("dicom_body_part", "classification", BODY_PARTS, "CR, DX, CT, MR, NM"),
        TaskDef("nuclei_seg", "segmentation", ("background", "nucleus"), "fluorescence microscopy"),
        TaskDef("nuclei_det", "detection", ("nucleus",), "fluorescence microscopy"),
        TaskDef("imaging_technique", "classification", TECHNIQUES, "microscopy, fundus photography"),
        TaskDef(MASKED_IMAGE_TASK, "masked_image", (), "every pretraining image"),
        # held out: other subjects / specimens / a modality never pretrained on
        TaskDef(
            "heldout_brain_region", "classification", HEAD_ZONES, "MR (T1)", heldout=True, augment=NO_FLIPS
        ),
        TaskDef("heldout_face_seg", "segmentation", ("background", "face"), "MR (T1)", heldout=True),
        TaskDef(
            "heldout_nuclei_count", "classification", COUNT_BINS, "fluorescence microscopy", heldout=True
        ),
        TaskDef("heldout_nuclei_det", "detection", ("nucleus",), "fluorescence microscopy", heldout=True),
        TaskDef(
            "heldout_vesicle_membrane",
            "classification",
            MEMBRANE_CLASSES,
            "cryo-electron tomography",
            heldout=True,
        ),
    )
}
