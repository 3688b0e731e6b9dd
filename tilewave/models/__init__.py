"""Upscaling models: the contract (:mod:`.base`), the registry, and the built-in models."""

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
from .registry import (
    ModelEntry,
    available_models,
    describe_model,
    get_entry,
    load_model,
    register,
    resolve_scale,
)

__all__ = [
    "ARRIVES_AS", "INBOUND", "OUTBOUND", "TILING_MODES", "ImageModel", "ModelDescriptor",
    "ModelEntry", "SizeRequirements", "TileModel", "TileRequest", "TileResult", "TilingMode",
    "available_models", "describe_model", "get_entry", "load_model", "register", "resolve_scale",
]
