"""Undoing ``fit_to_size``: a prediction on the fitted square brought back onto the image's own grid.

``fit_to_size`` maps an image pixel ``x`` to ``x * scale + offset`` on a ``size x size`` canvas
(``stretch``, ``letterbox`` or ``center``; see ``preprocessing``). Here the model's per-pixel
logits are cut out of that canvas (the image's region of it), resized back to the image's
decoded size or to any other output size (e.g. a volume slice before in-plane resampling),
and boxes are mapped the same way. With ``center`` and no resampling nothing is interpolated,
so a restored mask holds exactly the model's decisions on the pixels it saw.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["restore_boxes", "restore_logits"]

Geometry = tuple[float, float, float, float]
"""``(scale_x, scale_y, offset_x, offset_y)`` as ``fit_to_size`` returns it."""


def restore_logits(
    logits: torch.Tensor, geometry: Geometry, decoded_hw: tuple[int, int], *, output_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel logits on the fitted canvas -> logits on the image's grid.

    Args:
        logits: ``(C, S, S)`` on the canvas ``fit_to_size`` made.
        geometry: The fit's ``(scale_x, scale_y, offset_x, offset_y)``.
        decoded_hw: ``(H, W)`` of the image that was fitted.
        output_hw: ``(H_out, W_out)`` of the grid to restore onto (``decoded_hw``, or the
            grid before an in-plane resampling of the same field of view).

    Returns:
        Logits ``(C, H_out, W_out)`` float32 (resized bilinearly where sizes differ, as
        segmentation models' outputs usually are before the argmax), and ``seen``
        ``(H_out, W_out)`` bool: False where the image lay outside the canvas (a ``center``
        crop), where the model made no decision.
    """
    scale_x, scale_y, offset_x, offset_y = geometry
    height, width = decoded_hw
    new_h, new_w = max(1, round(height * scale_y)), max(1, round(width * scale_x))
    size = logits.shape[-1]
    top, left = round(offset_y), round(offset_x)
    canvas = logits.new_zeros((logits.shape[0], new_h, new_w), dtype=torch.float32)
    seen = torch.zeros((1, 1, new_h, new_w), dtype=torch.float32, device=logits.device)
    # canvas rows [top, top + new_h) hold the image; a negative top means the image was cropped
    src_y, src_x = max(0, top), max(0, left)
    dst_y, dst_x = max(0, -top), max(0, -left)
    h = min(size - src_y, new_h - dst_y)
    w = min(size - src_x, new_w - dst_x)
    canvas[:, dst_y : dst_y + h, dst_x : dst_x + w] = logits[:, src_y : src_y + h, src_x : src_x + w].float()
    seen[..., dst_y : dst_y + h, dst_x : dst_x + w] = 1.0
    if (new_h, new_w) != tuple(output_hw):
        canvas = F.interpolate(
            canvas[None], size=tuple(output_hw), mode="bilinear", align_corners=False, antialias=True
        )[0]
        seen = F.interpolate(seen, size=tuple(output_hw), mode="nearest")
    return canvas, seen[0, 0] > 0.5


def restore_boxes(
    boxes: np.ndarray, geometry: Geometry, decoded_hw: tuple[int, int], *, output_hw: tuple[int, int]
) -> np.ndarray:
    """``(N, 4)`` xyxy boxes on the fitted canvas -> xyxy boxes in pixels of the output grid.

    Boxes are clipped to the image (parts predicted on the padding of a ``letterbox`` fit fall
    outside it).
    """
    scale_x, scale_y, offset_x, offset_y = geometry
    height, width = decoded_hw
    out_h, out_w = output_hw
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x = (boxes[:, [0, 2]] - offset_x) / scale_x
    y = (boxes[:, [1, 3]] - offset_y) / scale_y
    x = np.clip(x, 0, width) * (out_w / width)
    y = np.clip(y, 0, height) * (out_h / height)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
