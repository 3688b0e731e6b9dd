"""Storage: lazy inputs, the Zarr working store, the OME-Zarr output, job state and TIFF
export. Members load on first use, so a module that needs only paths does not import
zarr and dask."""

from __future__ import annotations

from .._lazy import lazy_attributes

__all__ = [
    "ArrayReader", "ArraySpec", "ArrayWriter", "ContextStore", "InputImage", "Ledger",
    "PersistedContext", "SUPPORTED_CHANNELS", "SUPPORTED_DTYPES", "create_output", "ingest",
    "lazy_pixels", "open_input",
]

__getattr__ = lazy_attributes(__name__, {
    "ArrayReader": ".arrays", "ArraySpec": ".arrays", "ArrayWriter": ".arrays",
    "ingest": ".ingest", "SUPPORTED_CHANNELS": ".inputs", "SUPPORTED_DTYPES": ".inputs",
    "InputImage": ".inputs", "lazy_pixels": ".inputs", "open_input": ".inputs",
    "ContextStore": ".job_state", "Ledger": ".job_state", "PersistedContext": ".job_state",
    "create_output": ".ome"})
