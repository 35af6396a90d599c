"""medfoundry: pretrain biomedical image encoders on many small datasets, and measure what they save.

Importing medfoundry is cheap: subpackages (and torch) load when used.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
