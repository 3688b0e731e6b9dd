"""Storage: lazy inputs, the Zarr working store, the OME-Zarr output, and job state."""

from .arrays import ArrayReader, ArraySpec, ArrayWriter
from .ingest import ingest
from .inputs import SUPPORTED_CHANNELS, SUPPORTED_DTYPES, InputImage, lazy_pixels, open_input
from .job_state import ContextStore, Ledger, PersistedContext
from .ome import create_output

__all__ = [
    "ArrayReader", "ArraySpec", "ArrayWriter", "ContextStore", "InputImage", "Ledger",
    "PersistedContext", "SUPPORTED_CHANNELS", "SUPPORTED_DTYPES", "create_output", "ingest",
    "lazy_pixels", "open_input",
]
