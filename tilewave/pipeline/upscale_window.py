"""Computing one tile: pure functions from input pixels (and neighbour contexts) to
output pixels (and outgoing contexts). No I/O, no Ray; the workers and the whole-image
reference both call these, so they convert pixels in exactly the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models.base import Forward, SteppedModel, TileModel, TileRequest, TilingMode
from .blend import Ramp, blend_core, split_prediction
from .grid import Tile, TileGrid


def unit_scale(dtype: np.dtype) -> float:
    """The value that maps to 1.0 in unit space: the integer maximum, or 1 for floats."""
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def to_unit(pixels: np.ndarray, device: torch.device | None = None, half: bool = False) -> torch.Tensor:
    """``(c, h, w)`` pixels of any supported dtype to a ``(1, c, h, w)`` float tensor."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    x = (x / unit_scale(pixels.dtype))[None]
    if device is not None and device.type == "cuda":
        # Page-locked memory lets the copy run as a DMA transfer, off the CPU's hands.
        x = x.pin_memory().to(device, non_blocking=True)
    elif device is not None:
        x = x.to(device)
    return x.half() if half else x


def from_unit(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Unit-space float ``(c, h, w)`` back to ``dtype``: rounded and clipped for integers."""
    x = np.asarray(x, dtype=np.float32)
    if np.issubdtype(dtype, np.integer):
        top = unit_scale(dtype)
        return np.clip(np.rint(x * np.float32(top)), 0, top).astype(dtype)
    return x.astype(dtype, copy=False)


def _run_image(model: TileModel, x: torch.Tensor, forward: Forward | None = None) -> torch.Tensor:
    """``forward_image`` (or ``forward``) on a window padded to the model's size requirements."""
    req = model.descriptor.size
    h, w = x.shape[-2:]
    ph, pw = req.padded_shape(h, w)
    if (ph, pw) != (h, w):
        x = F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")
    s = model.descriptor.scale
    return (forward or model.forward_image)(x)[..., : h * s, : w * s]


def run_tile(
    model: TileModel,
    grid: TileGrid,
    tile: Tile,
    window: np.ndarray,
    mode: TilingMode,
    inbound: Mapping[str, Any],
    ramp: Ramp = "cosine",
    device: torch.device | None = None,
    half: bool = False,
    forward: Forward | None = None,
    info: dict[str, Any] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Upscale one tile.

    ``window`` holds the input pixels of ``tile.read``. Returns the tile's own output
    (its core times the scale, in the input's dtype) and the contexts for its right,
    lower and lower-right neighbours (empty in ``halo`` mode). ``forward`` replaces the
    model's ``forward_image`` in ``halo`` and ``blend`` modes (a worker's batcher).
    A sampler's ``(steps run, steps asked for)`` is put in ``info["steps"]``, if given.

    A positional model (position-keyed noise) runs through ``forward_tile`` in every
    mode, told where its window lies; outside ``context`` mode with no contexts, asked
    for the tile's whole prediction.
    """
    s = grid.scale
    x = to_unit(window, device, half)
    with torch.inference_mode():
        if mode == "context" or model.descriptor.positional:
            own = tile.core if mode == "context" else tile.predicted
            request = TileRequest(row=tile.row, col=tile.col, core=own, window=tile.read,
                                  image_size=(grid.height, grid.width),
                                  contexts=inbound if mode == "context" else {})
            result = model.forward_tile(x, request)
            if info is not None and result.steps is not None:
                info["steps"] = result.steps
            out = result.output[0].float().cpu().numpy()
            if mode == "context":
                return from_unit(out, window.dtype), dict(result.contexts)
            prediction = out
        else:
            out = _run_image(model, x, forward)[0].float().cpu().numpy()
            ry0, _, rx0, _ = tile.read
            py0, py1, px0, px1 = tile.predicted
            top, left = (py0 - ry0) * s, (px0 - rx0) * s
            prediction = out[:, top : top + (py1 - py0) * s, left : left + (px1 - px0) * s]
    if mode == "halo":
        return from_unit(prediction, window.dtype), {}
    core, strips = split_prediction(s, tile, prediction)
    core = blend_core(core, inbound, ramp)
    return from_unit(core, window.dtype), {k: np.ascontiguousarray(v) for k, v in strips.items()}


def run_step(model: SteppedModel, grid: TileGrid, tile: Tile, window: np.ndarray,
             inbound: Mapping[str, Any], step: int, state: Any,
             device: torch.device | None = None, half: bool = False
             ) -> tuple[np.ndarray | None, dict[str, Any], Any, tuple[int, int] | None]:
    """Sampler step ``step`` of one tile of a stepped context model (``--schedule step``).

    ``inbound`` holds the neighbours' contexts of this step, ``state`` what the tile's
    previous step left (None at step 0). Returns the tile's own output after its last
    step (None before), this step's outgoing contexts, the state for the next step
    (None after the last) and, after the last, the steps run and asked for.
    """
    x = to_unit(window, device, half)
    request = TileRequest(row=tile.row, col=tile.col, core=tile.core, window=tile.read,
                          image_size=(grid.height, grid.width), contexts=inbound)
    with torch.inference_mode():
        result = model.forward_step(x, request, step, state)
    if result.output is None:
        return None, dict(result.contexts), result.state, None
    out = result.output[0].float().cpu().numpy()
    return from_unit(out, window.dtype), dict(result.contexts), None, result.steps


def reference_upscale(model: TileModel, pixels: np.ndarray) -> np.ndarray:
    """Whole-image upscaling of ``(c, h, w)`` pixels, with the same conversions as tiles."""
    with torch.inference_mode():
        out = _run_image(model, to_unit(pixels))[0].float().numpy()
    return from_unit(out, pixels.dtype)
