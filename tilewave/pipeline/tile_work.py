"""The work of one tile: read its window, run the model, write its output chunk, keep its
outgoing contexts. The Ray actor, the in-process pool and the benchmark peers all run
tiles through :func:`process_tile`; they differ only in how pixels are read and written
and where contexts are kept, which :class:`TileSetup` carries as plain functions.

Whatever goes wrong is turned into the user's error here, once
(:func:`tilewave.errors.user_error`), so no caller re-types a tile's failure.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BadPixelsError, TileFailedError, UnreadableInputError, first_line, user_error
from ..models.base import TileModel, TilingMode
from ..storage.contexts import PersistedContext
from ..storage.nodata import fill_nodata, nodata_mask, restore_nodata
from .blend import Ramp
from .difficulty import assess
from .directions import OUTBOUND, Direction
from .grid import Tile, TileGrid
from .indices import TileIndex, Window
from .messages import TileDone
from .upscale_window import run_step, run_tile

#: Reads the input pixels of a window ``(y0, y1, x0, x1)`` as ``(c, h, w)``.
Read = Callable[[Window], np.ndarray]
#: Writes a tile's ``(c, h, w)`` output at output pixel ``(y0, x0)``; returns its
#: checksum (:func:`tilewave.storage.arrays.checksum`), or None where none is kept.
Write = Callable[[int, int, np.ndarray], "int | None"]
#: Keeps one outgoing context of a producer (of one sampler step under ``--schedule
#: step``, else None); returns the handle its consumer receives.
Keep = Callable[[TileIndex, Direction, Any, "int | None"], Any]


@dataclass(frozen=True)
class States:
    """Where a tile's sampler state waits between its steps (``--schedule step``)."""

    #: The state tile ``index`` left after step ``k``.
    load: Callable[[TileIndex, int], Any]
    #: Keep the state tile ``index`` reached after step ``k``.
    save: Callable[[TileIndex, int, Any], None]


@dataclass(frozen=True, kw_only=True)
class TileSetup:
    """A loaded model and where its tiles come from and go."""

    grid: TileGrid
    mode: TilingMode
    model: TileModel
    read: Read
    write: Write
    #: Where contexts go; None when tiles do not depend on their neighbours.
    keep: Keep | None = None
    ramp: Ramp = "cosine"
    device: Any = None
    half: bool = False
    #: The cheap model of ``adaptive`` jobs (bicubic), None otherwise.
    cheap: TileModel | None = None
    nodata: float | None = None
    #: The input as the user named it, and the worker's name, for messages.
    input_name: str = ""
    worker: str = ""
    #: Runs a tile's computation on one of the worker's compute threads and returns its
    #: result, so that other tiles of the same worker read their input and write their
    #: output meanwhile; None: on the calling thread.
    compute: Callable[[Callable[[], Any]], Any] | None = None
    #: Runs the model on one tile's input, batched with other tiles' (halo and blend
    #: modes); None: the model's own ``forward_image``.
    forward: Callable[[Any], Any] | None = None
    #: The sampler steps a tile is asked for (multi-step models), counted for easy tiles
    #: as steps saved.
    steps: int | None = None
    #: Where sampler states wait between a tile's steps; None unless ``--schedule step``.
    states: States | None = None


def _check_finite(window: np.ndarray, tile: Tile, input_name: str,
                  mask: np.ndarray | None = None) -> None:
    if window.dtype.kind != "f":
        return
    bad = ~np.isfinite(window)
    if mask is not None:
        bad &= ~mask[None]  # nodata may be NaN
    if bad.any():
        c, y, x = (int(v) for v in np.argwhere(bad)[0])
        raise BadPixelsError(
            f"input {input_name!r} has NaN or infinite values (first at x={tile.read[2] + x}, "
            f"y={tile.read[0] + y}, channel {c}); tilewave does not guess what they mean: "
            "replace them (with 0 or the nodata value) and run again")


def _is_easy(setup: TileSetup, tile: Tile, window: np.ndarray) -> bool:
    cy0, cy1, cx0, cx1 = tile.core
    ry0, _, rx0, _ = tile.read
    return assess(window[:, cy0 - ry0 : cy1 - ry0, cx0 - rx0 : cx1 - rx0], setup.nodata).easy


def _load(handle: Any) -> Any:
    return handle.load() if isinstance(handle, PersistedContext) else handle


def _read(setup: TileSetup, tile: Tile) -> np.ndarray:
    try:
        return setup.read(tile.read)
    except OSError:
        raise  # the storage's to say (full, forbidden, unreachable), not the pixels'
    except Exception as exc:
        # Chunks that do not decode, or decode to the wrong shape: the input is damaged,
        # and running again will not change that.
        raise UnreadableInputError(setup.input_name, tile.row, tile.col, tile.read,
                                   first_line(exc, 160), traceback.format_exc()) from None


def _window(setup: TileSetup, tile: Tile) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """The tile's input pixels (nodata filled), its nodata mask, and whether it is easy."""
    window = _read(setup, tile)
    mask = nodata_mask(window, setup.nodata)
    _check_finite(window, tile, setup.input_name, mask)
    cheap = setup.cheap is not None and _is_easy(setup, tile, window)
    if mask is not None:
        window = fill_nodata(window, mask)
    return window, mask, cheap


def _write(setup: TileSetup, tile: Tile, core: np.ndarray, mask: np.ndarray | None) -> int | None:
    """Write the tile's output chunk (nodata put back); returns its checksum."""
    grid = setup.grid
    oy0, oy1, ox0, ox1 = grid.out_window(tile.core)
    if mask is not None and setup.nodata is not None and core.shape[1:] == (oy1 - oy0, ox1 - ox0):
        cy0, cy1, cx0, cx1 = tile.core
        ry0, _, rx0, _ = tile.read
        core = restore_nodata(core, mask[cy0 - ry0 : cy1 - ry0, cx0 - rx0 : cx1 - rx0],
                              grid.scale, setup.nodata)
    if core.shape[1:] != (oy1 - oy0, ox1 - ox0):
        # Writing it would spill into the neighbours' chunks.
        raise ValueError(f"the model returned {core.shape[1]} x {core.shape[2]} output "
                         f"pixels for a tile of {oy1 - oy0} x {ox1 - ox0}")
    return setup.write(oy0, ox0, core)


def _keep(setup: TileSetup, tile: Tile, outbound: Mapping[str, Any],
          step: int | None) -> dict[Direction, Any]:
    handles: dict[Direction, Any] = {}
    if setup.keep is not None:
        # Every consumer inside the grid gets a context, None included, so that on
        # resume a missing one always means a lost context.
        for direction, (dr, dc) in OUTBOUND.items():
            if setup.grid.contains(tile.row + dr, tile.col + dc):
                handles[direction] = setup.keep(tile.index, direction, outbound.get(direction),
                                                step)
    return handles


def _work(setup: TileSetup, tile: Tile, inbound: Mapping[str, Any]
          ) -> tuple[dict[Direction, Any], bool, tuple[int, int] | None, int | None]:
    grid = setup.grid
    window, mask, cheap = _window(setup, tile)
    model, half = (setup.cheap, False) if cheap else (setup.model, setup.half)
    contexts = {Direction(k): _load(v) for k, v in inbound.items() if v is not None}
    # An easy tile of a context model is exact bicubic over its halo, and leaves its
    # neighbours no context (the model runs them as if it were absent).
    mode = "halo" if cheap and setup.mode == "context" else setup.mode
    info: dict[str, Any] = {}

    def compute() -> tuple[np.ndarray, dict[str, Any]]:
        return run_tile(model, grid, tile, window, mode, contexts,  # type: ignore[arg-type]
                        setup.ramp, setup.device, half, None if cheap else setup.forward, info)

    core, outbound = setup.compute(compute) if setup.compute is not None else compute()
    written = _write(setup, tile, core, mask)
    steps = (0, setup.steps) if cheap and setup.steps else info.get("steps")
    return _keep(setup, tile, outbound, None), cheap, steps, written


def _work_step(setup: TileSetup, tile: Tile, inbound: Mapping[str, Any], step: int
               ) -> tuple[dict[Direction, Any], tuple[int, int] | None, int | None]:
    """Step ``step`` of a tile under ``--schedule step``: its state is read from and
    written back to the working store; its output is written after its last step."""
    assert setup.states is not None
    window, mask, _ = _window(setup, tile)
    contexts = {Direction(k): _load(v) for k, v in inbound.items() if v is not None}
    state = setup.states.load(tile.index, step - 1) if step > 0 else None

    def compute() -> tuple[np.ndarray | None, dict[str, Any], Any, tuple[int, int] | None]:
        return run_step(setup.model, setup.grid, tile, window, contexts, step, state,  # type: ignore[arg-type]
                        setup.device, setup.half)

    core, outbound, state, steps = setup.compute(compute) if setup.compute is not None else compute()
    if (core is None) != (setup.steps is not None and step < setup.steps - 1):
        # The ledger records a tile's last step as the tile: an output before it, or none
        # at it, would leave a recorded tile without its pixels or a step without a state.
        raise ValueError(f"the model returned {'no output' if core is None else 'an output'} "
                         f"at step {step} of {setup.steps}")
    written = None
    if core is None:
        setup.states.save(tile.index, step, to_cpu(state))
    else:
        written = _write(setup, tile, core, mask)
    return _keep(setup, tile, outbound, step), steps, written


def process_tile(setup: TileSetup, row: int, col: int,
                 inbound: Mapping[str, Any] | None = None, step: int | None = None) -> TileDone:
    """Run tile ``(row, col)``: read, compute, write its chunk, keep its contexts; or,
    given ``step``, only that sampler step of it (``--schedule step``).

    ``inbound`` maps ``left``/``top``/``top_left`` to what those neighbours kept (a
    :class:`PersistedContext` is loaded here). Raises the user's error for any failure:
    bad pixels and refused storage as they are, anything else as
    :class:`~tilewave.errors.TileFailedError` with the traceback in its ``details``.
    """
    start = time.perf_counter()
    tile = setup.grid[row, col]
    cheap = False
    try:
        if step is None:
            outbound, cheap, steps, written = _work(setup, tile, inbound or {})
        else:
            outbound, steps, written = _work_step(setup, tile, inbound or {}, step)
    except Exception as exc:
        known = user_error(exc)
        if known is not None:
            raise known from None
        raise TileFailedError(row, col, tile.core, first_line(exc), traceback.format_exc()) from None
    return TileDone(row=row, col=col, seconds=time.perf_counter() - start, worker=setup.worker,
                    outbound=outbound, cheap=cheap, steps=steps, checksum=written, step=step)


def to_cpu(value: Any) -> Any:
    """A context as it leaves the worker: on the CPU, compact. GPU tensors neither pickle
    nor travel well, and a view of a larger tensor would pickle all the storage behind it
    (for uniba-x2, 64 MB per context instead of 1 MB)."""
    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach()
        return value.cpu() if value.device.type != "cpu" else value.clone(memory_format=torch.contiguous_format)
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


