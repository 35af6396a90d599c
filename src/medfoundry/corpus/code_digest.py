"""What the corpus's pixels and labels depend on besides its settings: every medfoundry module the
corpus code imports (transitively, e.g. ``data/dicom`` and ``data/volumes``), and the
installed versions of the libraries those modules import (numpy, scipy, Pillow, pydicom, ...).

The modules are found by reading their ``import`` statements (also those inside functions), not
by looking at what happens to be imported in this process, so the digest is the same in every
process. A package's ``__init__`` counts when names are imported from the package itself
(``from medfoundry.data import Preprocessing``), not when one of its modules is imported.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path

__all__ = ["code_digest", "corpus_modules"]

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
"""``src/medfoundry``."""


def corpus_modules() -> list[Path]:
    """The medfoundry source files the corpus code imports, itself included, sorted."""
    todo = sorted(Path(__file__).resolve().parent.rglob("*.py"))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [p for p in _imports(path)[0] if p not in seen]
    return sorted(seen)


def code_digest() -> str:
    """SHA-256 of the corpus modules' paths and contents and of their libraries' versions."""
    digest = hashlib.sha256()
    modules = corpus_modules()
    for path in modules:
        digest.update(path.relative_to(PACKAGE_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    libraries = sorted({name for path in modules for name in _imports(path)[1]})
    distributions = packages_distributions()
    for name in libraries:
        for distribution in sorted(distributions.get(name, [])):
            digest.update(f"{distribution}=={_version(distribution)}".encode())
    return digest.hexdigest()


@cache
def _imports(path: Path) -> tuple[list[Path], list[str]]:
    """The medfoundry files ``path`` imports, and the top-level names of its other imports."""
    ours, others = [], []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "medfoundry":
                others.append(name.split(".")[0])
                continue
            target = PACKAGE_ROOT.joinpath(*name.split(".")[1:])
            for file in (target.with_suffix(".py"), target / "__init__.py"):
                if file.is_file():  # a module, or a package imported from; a name in a module is not
                    ours.append(file)
    return ours, others


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"
