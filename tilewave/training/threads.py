"""Torch's thread count for the length of one call.

``torch.set_num_threads`` is process-wide: a training run in the caller's process (the
API, ``executor="local"``) that left it changed would change every later convolution's
summation order there, and with it the last bit of outputs computed after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body on ``threads`` torch threads (None: as it is), then restore the count."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
