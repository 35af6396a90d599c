"""What every source gives back, and the file-listing helpers the sources share.

A source is a frozen pydantic model with a ``type`` key. It lists its samples as ``Record``s
without decoding pixels (``scan``), names its classes when a task does not declare them
(``infer_classes``) and says how ``medfoundry predict`` reads new inputs for a task trained on
it (``prediction_reading``). A problem with one row or file is returned in ``SourceScan.problems`` (so
that ``on_error: skip`` can leave that sample out); a problem with the source as a whole (a
missing manifest, a missing column) raises ``DataError`` at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, get_args

from pydantic import BaseModel, ConfigDict

from medfoundry.data.masks import MaskMapping, MaskValues, mask_mapping
from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.record import Box, Record, TargetKind
from medfoundry.data.volumes import Axis
from medfoundry.errors import ConfigError, DataError

__all__ = [
    "EDGE_TOLERANCE_PX",
    "FilePair",
    "PredictionReading",
    "SourceBase",
    "SourceScan",
    "file_stem",
    "list_files",
    "make_box",
    "pair_files",
]

EDGE_TOLERANCE_PX = 1.0
"""How far (pixels) a box may stick out of its image: annotation tools round edges outwards."""


@dataclass
class SourceScan:
    """A source's samples before decoding.

    Attributes:
        records: One record per usable sample, in a deterministic order.
        problems: One message per row or file left out (naming file, row or key).
        notes: One line per file passed over as not a sample (e.g. a DICOM structured
            report) or per annotation changed or left out, for ``validate-data``.
    """

    records: list[Record]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PredictionReading:
    """How ``medfoundry predict`` reads volumes and DICOM series given as new input: as the
    task's own source sliced its training volumes (the defaults: axial slices as stored, for
    sources of 2D images, which slice nothing).

    Attributes:
        axis: The slicing direction (after reorientation to RAS+).
        spacing_mm: In-plane ``[row, col]`` spacing slices are resampled to; ``None`` keeps it.
        volume_index: Which 3D volume of 4D files; ``None``: files must be 3D.
    """

    axis: Axis = "axial"
    spacing_mm: tuple[float, float] | None = None
    volume_index: int | None = None


class SourceBase(BaseModel):
    """Shared behaviour of source configs (each subclass adds its ``type`` and fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: ClassVar[tuple[TargetKind, ...]]
    """The targets this source can give."""

    @classmethod
    def path_fields(cls) -> tuple[str, ...]:
        """The fields that hold file or folder paths (relative ones are resolved against the
        task database that lists the source), read from the field types."""
        return tuple(
            name
            for name, info in cls.model_fields.items()
            if info.annotation is not None and _holds_path(info.annotation)
        )

    @property
    def location(self) -> str:
        """The file or folder the source reads (``path``, or ``images`` for paired folders), for messages."""
        return str(getattr(self, "path", None) or getattr(self, "images", ""))

    def scan(
        self, target: TargetKind, *, classes: list[str], preprocessing: Preprocessing, ignore_index: int
    ) -> SourceScan:
        """List the samples for ``target`` (see module docstring).

        Args:
            target: What the task needs from each sample.
            classes: The task's classes (declared or inferred).
            preprocessing: The task's preprocessing (its intensity setting goes to the readers).
            ignore_index: Mask value of unlabelled pixels (segmentation).

        Raises:
            ConfigError: the source cannot give ``target``.
            DataError: the source as a whole is unusable.
        """
        if target not in self.targets:
            raise ConfigError(
                f"{self.location}: a source of type '{getattr(self, 'type', '?')}' gives "
                f"{' or '.join(self.targets)}, but this task needs {target}"
            )
        return self._scan(target, classes, preprocessing, ignore_index)

    def prediction_reading(self) -> PredictionReading:
        """How ``medfoundry predict`` reads new volumes for a task trained on this source (every
        source type says so, even when it reads only 2D images)."""
        raise NotImplementedError

    def infer_classes(self, target: TargetKind) -> list[str]:
        """Class names read from the data, for a task that declares none.

        Raises:
            ConfigError: this source cannot name the classes of ``target``; declare them.
        """
        if target == "image":
            return []
        raise ConfigError(
            f"{self.location}: cannot infer the classes of a '{getattr(self, 'type', '?')}' source "
            f"for a {target} task; list them under the task's 'classes'"
        )

    def _scan(
        self, target: TargetKind, classes: list[str], preprocessing: Preprocessing, ignore_index: int
    ) -> SourceScan:
        raise NotImplementedError

    def _mask_mapping(self, classes: list[str], ignore_index: int) -> MaskMapping:
        values: MaskValues = getattr(self, "mask_values", None)
        return mask_mapping(values, classes, ignore_index, where=f"{self.location}: mask_values")


def list_files(folder: Path, suffixes: Iterable[str], recursive: bool = True) -> list[Path]:
    """Files under ``folder`` whose name ends with one of ``suffixes`` (any case), sorted.

    Raises:
        DataError: the folder does not exist.
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    ends = tuple(s.lower() for s in suffixes)
    pattern = "**/*" if recursive else "*"
    return sorted(
        p
        for p in folder.glob(pattern)
        if p.is_file() and p.name.lower().endswith(ends) and not p.name.startswith(".")
    )


def file_stem(path: Path) -> str:
    """Name without its extension, taking ``.nii.gz`` as one extension."""
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


@dataclass(frozen=True)
class FilePair:
    """An image file and the annotation file (mask, label volume) its name points to.

    Attributes:
        image: The image file.
        case: The image's name without extension and ``image_suffix`` (names its group).
        wanted: The annotation's expected name without extension.
        annotation: The annotation file, or ``None`` when there is none by that name.
    """

    image: Path
    case: str
    wanted: str
    annotation: Path | None


def pair_files(
    images: list[Path], annotations: list[Path], *, image_suffix: str = "", annotation_suffix: str = ""
) -> tuple[list[FilePair], list[Path]]:
    """Match images to annotations by name: ``<case><image_suffix>.*`` with
    ``<case><annotation_suffix>.*`` (any extensions). When both lists come from one folder,
    the suffixes tell images from annotations (``case_image.nii.gz`` / ``case_label.nii.gz``).

    Returns:
        One pair per image, in order, and the annotation files no image points to.

    Raises:
        ConfigError: images and annotations share files and no suffix tells them apart.
    """
    if set(images) & set(annotations):
        if not (image_suffix or annotation_suffix):
            raise ConfigError(
                f"{images[0].parent}: images and annotations are in one folder; set the annotation "
                "suffix (e.g. _label or _mask) and, if images have one, the image suffix (e.g. _image)"
            )

        def is_annotation(f: Path) -> bool:
            stem = file_stem(f)
            if annotation_suffix:
                return stem.endswith(annotation_suffix)
            return not stem.endswith(image_suffix)

        annotations = [f for f in annotations if is_annotation(f)]
        images = [f for f in images if not is_annotation(f)]
    images = [f for f in images if file_stem(f).endswith(image_suffix)]
    by_name: dict[str, Path] = {}
    for f in annotations:
        by_name.setdefault(file_stem(f), f)
    pairs = []
    for image in images:
        stem = file_stem(image)
        case = stem[: len(stem) - len(image_suffix)] if image_suffix else stem
        wanted = case + annotation_suffix
        pairs.append(FilePair(image, case, wanted, by_name.get(wanted)))
    used = {pair.wanted for pair in pairs}
    return pairs, [f for name, f in by_name.items() if name not in used]


def make_box(coords: list[float], name: str, classes: list[str], *, where: str) -> Box:
    """A box from ``[x1, y1, x2, y2]`` in pixels and a class name.

    Raises:
        DataError: ``x2 <= x1`` or ``y2 <= y1``, or a class that is not declared. (Whether the
            box lies inside the image is checked when the image is decoded.)
    """
    x1, y1, x2, y2 = (float(c) for c in coords)
    if not (x2 > x1 and y2 > y1):
        raise DataError(f"{where} {[x1, y1, x2, y2]} needs x2 > x1 and y2 > y1")
    if name not in classes:
        raise DataError(f"{where}: class '{name}' is not a declared class ({', '.join(classes)})")
    return Box(x1, y1, x2, y2, classes.index(name))


def _holds_path(annotation: object) -> bool:
    """``Path`` or ``Path | None``."""
    return annotation is Path or Path in get_args(annotation)
