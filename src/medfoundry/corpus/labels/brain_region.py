"""Region of a brain patch from the position of its centre.

- ``brain_region`` (pretraining, MNI152 template): the octant of the patch centre in MNI
  space, whose origin is the anterior commissure: left (x < 0) or right, anterior (y >= 0) or
  posterior, superior (z >= 0) or inferior.
- ``heldout_brain_region`` (another head, not in MNI space): the zone of the patch centre in the
  head's own bounding box (voxels above a head threshold): anterior, middle or posterior third
  along y, superior or inferior half along z. No hemisphere: a different partition from the
  pretraining octants.
"""

from __future__ import annotations

__all__ = ["HEAD_ZONES", "MNI_OCTANTS", "head_zone", "mni_octant"]

MNI_OCTANTS = tuple(
    f"{side}_{ap}_{si}"
    for side in ("left", "right")
    for ap in ("anterior", "posterior")
    for si in ("superior", "inferior")
)
HEAD_ZONES = tuple(
    f"{ap}_{si}" for si in ("superior", "inferior") for ap in ("anterior", "middle", "posterior")
)


def mni_octant(x_mm: float, y_mm: float, z_mm: float) -> str:
    """The octant of an MNI coordinate (mm, RAS+)."""
    side = "left" if x_mm < 0 else "right"
    ap = "anterior" if y_mm >= 0 else "posterior"
    si = "superior" if z_mm >= 0 else "inferior"
    return f"{side}_{ap}_{si}"


def head_zone(y_fraction: float, z_fraction: float) -> str:
    """The zone of a point at fractions (0..1, posterior->anterior, inferior->superior) of the head box."""
    ap = "posterior" if y_fraction < 1 / 3 else "middle" if y_fraction < 2 / 3 else "anterior"
    si = "inferior" if z_fraction < 0.5 else "superior"
    return f"{ap}_{si}"
