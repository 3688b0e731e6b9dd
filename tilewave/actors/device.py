"""Choosing where a worker runs its model."""

from __future__ import annotations

import torch


def pick_device() -> torch.device:
    """The first GPU this process may use (Ray sets CUDA_VISIBLE_DEVICES for actors that
    asked for one), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_batch(device: torch.device) -> int:
    """Batches keep a GPU busy; on CPUs, where a batch of tiles ran slower than the
    same tiles one by one (``docs/benchmarks/batch.md``), tiles go alone."""
    from ..pipeline.scheduling import GPU_BATCH

    return GPU_BATCH if device.type == "cuda" else 1
