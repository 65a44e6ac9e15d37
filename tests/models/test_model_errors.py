"""Bad input fails early with one PhiscaleError that names the value and the fix."""

from __future__ import annotations

import pytest

from phiscale.errors import PhiscaleError
from phiscale.models import MODEL_NAMES, build_model, resolve_scale


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(PhiscaleError) as err:
        build_model("resnet50")
    message = str(err.value)
    assert "resnet50" in message and all(name in message for name in MODEL_NAMES)
    assert "\n" not in message


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("efficientnet", {"phi": -1.0}, "phi=-1.0"),
        ("efficientnet", {"phi": float("nan")}, "phi=nan"),
        ("mobilenet_v2", {"width_mult": 0.0}, "width_mult=0.0"),
        ("mobilenet_v1", {"width_mult": -0.5}, "width_mult=-0.5"),
        ("mobilenet_v2", {"resolution": 16}, "total stride 32"),
        ("mobilenet_v1", {"resolution_mult": 0.1}, "total stride 32"),
        ("efficientnet_b0", {"num_classes": 0}, "num_classes=0"),
        ("mobilenet_v3_small", {"phi": 1.0}, "phi applies only"),
        ("efficientnet_b3", {"phi": 3.0}, "phi applies only"),
        ("mobilenet_v2", {"alpha": 1.3}, "apply only to name='efficientnet'"),
        ("efficientnet_b2", {"width_mult": 1.5}, "presets are fixed"),
        ("efficientnet", {"width_mult": 1.5}, "derives it from phi"),
        ("efficientnet", {"phi": 1.0, "beta": 0.0}, "beta=0.0"),
        ("mobilenet_v2", {"dropout": 1.0}, "dropout=1.0"),
        ("mobilenet_v1", {"drop_path_rate": 0.1}, "has none"),
        ("mobilenet_v2", {"resolution": 160, "resolution_mult": 0.5}, "not both"),
    ],
)
def test_bad_scaling_input_raises_one_clear_error(name, kwargs, match):
    with pytest.raises(PhiscaleError, match=match) as err:
        resolve_scale(name, **kwargs)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)
