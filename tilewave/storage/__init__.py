"""Storage: lazy inputs, the Zarr working store, the OME-Zarr output, job state and TIFF
export. Members load on first use, so a module that needs only paths does not import
zarr and dask."""

from __future__ import annotations

from .._lazy import lazy_attributes, lazy_dir

__all__ = [
    "ArrayReader", "ArraySpec", "ArrayWriter", "ContextStore", "InputImage", "Ledger",
    "PersistedContext", "SUPPORTED_DTYPES", "create_output", "ingest",
    "lazy_pixels", "open_input",
]

_LAZY = {
    "ArrayReader": ".arrays", "ArraySpec": ".arrays", "ArrayWriter": ".arrays",
    "ingest": ".ingest", "SUPPORTED_DTYPES": ".inputs",
    "InputImage": ".inputs", "lazy_pixels": ".inputs", "open_input": ".inputs",
    "ContextStore": ".contexts", "Ledger": ".ledger", "PersistedContext": ".contexts",
    "create_output": ".ome"}
__getattr__ = lazy_attributes(__name__, _LAZY)
__dir__ = lazy_dir(globals(), _LAZY)
