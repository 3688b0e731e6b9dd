"""Helpers the tests share: sample data, inputs written by hand, and runs stopped midway.

Fixtures and hooks stay in ``conftest.py``; this module is imported by name (``from
helpers import ...``) from the tests folder, which pytest puts on ``sys.path`` for the
``conftest.py`` beside it.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

#: ../shared/data beside the checkout, present on development machines and in CI.
SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"

#: The secret key of the test S3 server: it must never appear in output, messages or objects.
S3_SECRET = "tilewave-test-secret-9f3c1d"


def shared_file(name: str) -> pathlib.Path:
    """A file from ../shared/data, or skip when this checkout has none beside it."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is not present beside this checkout")
    return path


def random_image(shape: tuple[int, int, int], dtype: str, seed: int = 0) -> np.ndarray:
    """A ``(c, h, w)`` image of random values covering the dtype's range."""
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        return rng.random(shape, dtype=np.float32)
    info = np.iinfo(dtype)
    return rng.integers(0, int(info.max) + 1, shape).astype(dtype)


def zarr_input(path, pixels: np.ndarray, chunk: int = 64) -> str:
    """Write ``(c, h, w)`` pixels as a Zarr v3 array with named axes; returns its path."""
    import zarr

    arr = zarr.create_array(str(path), shape=pixels.shape, chunks=(pixels.shape[0], chunk, chunk),
                            dtype=pixels.dtype, dimension_names=("c", "y", "x"))
    arr[:] = pixels
    return str(path)


def tiled_by_hand(model, pixels: np.ndarray, tile: int, edit_inbound=None) -> np.ndarray:
    """Run a context-mode ``model`` over every tile in raster order, handing contexts from
    tile to tile by hand, and assemble the output. ``edit_inbound(inbound)`` may change a
    tile's inbound contexts (to withhold one) before it runs."""
    from tilewave.pipeline.grid import TileGrid
    from tilewave.pipeline.upscale_window import run_tile

    _, h, w = pixels.shape
    grid = TileGrid(h, w, tile, model.descriptor.scale, halo=model.descriptor.halo)
    out = np.zeros((pixels.shape[0], h * grid.scale, w * grid.scale), pixels.dtype)
    emitted: dict = {}
    for t in grid:
        r, c = t.index
        inbound = {"left": emitted.get((r, c - 1), {}).get("right"),
                   "top": emitted.get((r - 1, c), {}).get("below"),
                   "top_left": emitted.get((r - 1, c - 1), {}).get("below_right")}
        if edit_inbound is not None:
            edit_inbound(inbound)
        window = pixels[:, t.read[0]:t.read[1], t.read[2]:t.read[3]]
        core, emitted[t.index] = run_tile(model, grid, t, window, "context", inbound)
        oy0, oy1, ox0, ox1 = grid.out_window(t.core)
        out[:, oy0:oy1, ox0:ox1] = core
    return out


class CodeRunningPayload:
    """Unpickling this writes ``marker``: what a checkpoint that runs code on load carries."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.marker, "ran"))


def recorded_tiles(output) -> int:
    """How many tiles the ledger of ``output`` lists as finished (0 before it exists)."""
    from tilewave.storage.ledger import Ledger

    return len(Ledger(str(output)).done())


def recorded_steps(output) -> int:
    """How many sampler steps of unfinished tiles the ledger of ``output`` lists
    (``--schedule step``; 0 before it exists)."""
    from tilewave.storage.ledger import Ledger

    return sum(Ledger(str(output)).steps_done().values())


def run_until_recorded(args: list[str], output, tiles: int, sig: int = signal.SIGKILL,
                       timeout: float = 120, recorded_tiles=recorded_tiles) -> int:
    """Start ``tilewave upscale ARGS --quiet`` in a process group of its own and send it
    ``sig`` once its ledger lists ``tiles`` tiles (or what ``recorded_tiles(output)``
    counts); returns how many were recorded by then."""
    proc = subprocess.Popen([sys.executable, "-m", "tilewave.cli", "upscale", *args, "--quiet"],
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while recorded_tiles(output) < tiles:
            if proc.poll() is not None:
                raise AssertionError(f"the run ended before it was stopped: {proc.stderr.read()!r}")
            if time.monotonic() > deadline:
                raise AssertionError("the run made no progress")
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)
    return recorded_tiles(output)


class Clock:
    """A clock the test moves: lease expiry without waiting for it."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def memory_root() -> str:
    """A fresh ``memory://`` folder: the memory backend is one store per process, and a
    fresh name keeps tests apart."""
    import uuid

    return f"memory://test-{uuid.uuid4().hex}"
