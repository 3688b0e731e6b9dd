"""Upscaling models: the contract (:mod:`.base`), the registry, and the built-in models.

Importing this package, listing the models and describing them imports no torch; the
families' networks are imported when a model is built (:func:`load_model`).
"""

from .base import (
    ARRIVES_AS,
    INBOUND,
    OUTBOUND,
    TILING_MODES,
    ImageModel,
    ModelDescriptor,
    SizeRequirements,
    TileModel,
    TileRequest,
    TileResult,
    TilingMode,
)
from .entry import ModelEntry
from .registry import (
    available_models,
    canonical_name,
    describe_model,
    get_entry,
    load_model,
    register,
    resolve_scale,
)

__all__ = [
    "ARRIVES_AS", "INBOUND", "OUTBOUND", "TILING_MODES", "ImageModel", "ModelDescriptor",
    "ModelEntry", "SizeRequirements", "TileModel", "TileRequest", "TileResult", "TilingMode",
    "available_models", "canonical_name", "describe_model", "get_entry", "load_model", "register",
    "resolve_scale",
]
