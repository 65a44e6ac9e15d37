"""MobileNet v1/v2/v3 and EfficientNet B0–B7 from one row language, plus compound scaling for any φ."""

from phiscale.models.build import MODEL_NAMES, PRESET_NAMES, ModelScale, build_model, resolve_scale

__all__ = ["MODEL_NAMES", "PRESET_NAMES", "ModelScale", "build_model", "resolve_scale"]
