"""Choosing where a worker runs its model."""

from __future__ import annotations

import torch


def pick_device() -> torch.device:
    """The first GPU this process may use (Ray sets CUDA_VISIBLE_DEVICES for actors that
    asked for one), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
