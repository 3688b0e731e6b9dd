"""tilewave: out-of-core super-resolution for gigapixel images on Ray and Zarr.

Importing the package imports nothing heavy: :func:`upscale`, :func:`upscale_cohort`,
:func:`tune`, :func:`ingest_image` and :class:`Report` load on first use, so ``import tilewave`` and ``tilewave --help`` are
instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes, lazy_dir

__version__ = "0.1.0"

__all__ = ["Report", "__version__", "ingest_image", "tune", "upscale", "upscale_cohort"]

if TYPE_CHECKING:
    from .api import Report, ingest_image, tune, upscale, upscale_cohort

_LAZY = {"Report": ".api", "ingest_image": ".api", "tune": ".api", "upscale": ".api",
         "upscale_cohort": ".api"}
__getattr__ = lazy_attributes(__name__, _LAZY)
__dir__ = lazy_dir(globals(), _LAZY)
