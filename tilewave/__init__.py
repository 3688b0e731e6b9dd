"""tilewave: out-of-core super-resolution for gigapixel images on Ray and Zarr."""

__version__ = "0.1.0"

from .api import Report, ingest_image, upscale  # noqa: E402

__all__ = ["Report", "__version__", "ingest_image", "upscale"]
