from __future__ import annotations

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from medfoundry.data.intensity import (
    WINDOW_PRESETS_HU,
    Intensity,
    PercentileIntensity,
    RangeIntensity,
    WindowIntensity,
    apply_windows,
    scale_to_unit,
)
from medfoundry.errors import DataError

INTENSITY = TypeAdapter(Intensity)


def test_window_maps_level_minus_half_width_to_0_and_plus_half_width_to_1() -> None:
    level, width = WINDOW_PRESETS_HU["soft_tissue"]
    hu = np.array([[level - width / 2, level, level + width / 2, 3000.0]])
    out = apply_windows(hu, WindowIntensity(windows=["soft_tissue"]))
    assert out.shape == (1, 4, 3)  # one window, replicated to three channels
    np.testing.assert_allclose(out[0, :, 0], [0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_three_windows_become_three_channels() -> None:
    hu = np.array([[-600.0]])  # lung level: mid-grey in the lung window, black in the others
    out = apply_windows(
        hu,
        INTENSITY.validate_python(
            {"type": "window", "windows": ["lung", "bone", {"level_hu": -600, "width_hu": 10}]}
        ),
    )
    np.testing.assert_allclose(out[0, 0], [0.5, 0.0, 0.5], atol=1e-6)


def test_percentile_and_range() -> None:
    values = np.arange(101, dtype=np.int16).reshape(1, 101)
    out = scale_to_unit(values, PercentileIntensity(low=10, high=90), where="x")
    assert out[0, 10, 0] == 0.0 and out[0, 90, 0] == 1.0 and np.isclose(out[0, 50, 0], 0.5)
    signed = scale_to_unit(np.array([[-5, 32767]], np.int16), RangeIntensity(), where="x")
    np.testing.assert_allclose(signed[0, :, 0], [0.0, 1.0])


def test_config_shorthand_and_validation_errors() -> None:
    assert INTENSITY.validate_python("percentile") == PercentileIntensity()
    with pytest.raises(ValidationError, match="give 1 window .* or 3"):
        INTENSITY.validate_python({"type": "window", "windows": ["lung", "bone"]})
    with pytest.raises(ValidationError, match="low .* must be below high"):
        INTENSITY.validate_python({"type": "percentile", "low": 60, "high": 40})
    with pytest.raises(ValidationError, match="Input should be 'lung', 'soft_tissue', 'bone' or 'brain'"):
        INTENSITY.validate_python({"type": "window", "windows": ["liver"]})


def test_window_on_a_plain_image_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="x.png: intensity 'window' needs DICOM"):
        scale_to_unit(np.zeros((2, 2), np.uint8), WindowIntensity(windows=["lung"]), where="x.png")
