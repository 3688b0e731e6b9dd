"""What tilewave is compared with: the same model over the same input, done the ways a user
might do it without tilewave. Each method runs in this process, so the benchmarks run
this file as a subprocess and sample its memory like a ``tilewave`` job's.

    python benchmarks/peers.py METHOD INPUT.zarr OUTPUT.zarr --model span-x2 [--tile 256]

Methods (``INPUT.zarr`` is a ``(c, y, x)`` Zarr v3 array, as ``tilewave ingest`` writes):

``whole``
    read the whole image into memory and run the model on it at once (what a notebook
    does); ``--memory-cap-gib`` caps the process's data segment (RLIMIT_DATA), so an image
    that does not fit fails with an allocation error instead of swapping the machine.
``naive``
    the tiles tilewave would run, one after another, assembling the output in one array
    in RAM and writing it at the end.
``bare``
    the same tiles, each written to its own output chunk as it finishes: tilewave's work
    with no Ray, no ledger, no progress bar, no pyramid. The reference for pipeline
    overhead.
``dask``
    ``dask.array.map_overlap`` with the model's halo (``boundary="none"``, so edge tiles
    see the same clipped windows as tilewave's) and ``to_zarr``, on dask's threaded
    scheduler with ``--threads`` threads of one torch thread each.

With ``--pyramid``, ``bare`` and ``dask`` then add the pyramid levels tilewave's output
has (2 x 2 means, halved until the longest side is at most 1024 pixels) the way a dask
user would: each level read back from the one written before, coarsened with
``dask.array.coarsen`` and written with ``to_zarr`` beside the output
(``OUTPUT.levels/1``, ...), so the peers produce what tilewave produces.

Every tiled method runs its tiles through tilewave's own
:func:`tilewave.pipeline.tile_work.process_tile` (``whole`` through
``reference_upscale``), so their outputs equal tilewave's and the
comparison measures only how the work is organised. Prints one JSON line: the method,
tile count and the seconds spent loading the model, in the tile loop and writing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

METHODS = ("whole", "naive", "bare", "dask")
#: Exit status of a run that did not fit under the memory cap.
OUT_OF_MEMORY = 3


def _grid_and_model(model_name: str, shape: tuple[int, int, int], tile: int, scale: int | None):
    from tilewave.models.registry import describe_model, load_model
    from tilewave.pipeline.grid import TileGrid

    desc = describe_model(model_name, scale)
    model = load_model(model_name, desc.scale)
    grid = TileGrid(shape[1], shape[2], tile, desc.scale, desc.halo)
    return grid, model, desc


def _create_output(path: str, channels: int, grid: Any, dtype: np.dtype) -> Any:
    import zarr

    return zarr.create_array(path, shape=(channels, *grid.out_shape),
                             chunks=(channels, *grid.out_chunk), dtype=dtype, fill_value=0)


def tile_loop(model: Any, grid: Any, mode: str, read: Callable[[tuple[int, int, int, int]], np.ndarray],
              write: Callable[[int, int, np.ndarray], None]) -> int:
    """Run every tile of ``grid`` in raster order through tilewave's own tile function,
    handing each tile its neighbours' contexts (kept in memory) and dropping a context
    once its consumer ran."""
    from tilewave.pipeline.job_plan import depends_on_neighbours
    from tilewave.pipeline.tile_work import TileSetup, process_tile
    from tilewave.pipeline.wavefront import ContextTable

    dependent = depends_on_neighbours(mode, grid.overlap)
    setup = TileSetup(grid=grid, mode=mode, model=model, read=read,  # type: ignore[arg-type]
                      write=write, keep=(lambda _tile, _direction, value, _step: value) if dependent else None)
    table: ContextTable[Any] = ContextTable(grid.rows, grid.cols)
    for tile in grid:  # raster order: every tile's neighbours ran before it
        done = process_tile(setup, tile.row, tile.col, table.inbound(tile.index))
        for direction, value in done.outbound.items():
            table.put(tile.index, direction, value)
        table.release(tile.index)
    return grid.count


def run(method: str, input_path: str, output_path: str, model_name: str, tile: int = 256,
        scale: int | None = None, threads: int = 1, pyramid: bool = False) -> dict[str, Any]:
    """Upscale ``input_path`` into a new Zarr array at ``output_path`` with ``method``
    (and, with ``pyramid``, add its levels); returns the timings."""
    import torch

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    before = torch.get_num_threads()
    # The dask peer runs ``threads`` tiles at once, each on one torch thread, as tilewave's
    # workers do; the serial methods get ``threads`` torch threads for their one tile.
    torch.set_num_threads(1 if method == "dask" else threads)
    try:
        return _run(method, input_path, output_path, model_name, tile, scale, threads, pyramid)
    finally:
        # A caller in the same process (a test session) keeps its own setting.
        torch.set_num_threads(before)


def _run(method: str, input_path: str, output_path: str, model_name: str, tile: int,
         scale: int | None, threads: int, pyramid: bool = False) -> dict[str, Any]:
    from tilewave.storage.arrays import ArrayReader, ArraySpec, ArrayWriter

    t0 = time.perf_counter()
    reader = ArrayReader(ArraySpec(input_path, "cyx"))
    grid, model, desc = _grid_and_model(model_name, reader.shape, tile, scale)
    mode = desc.default_mode
    out = _create_output(output_path, reader.shape[0], grid, reader.dtype)
    t1 = time.perf_counter()
    write_s = 0.0
    if method == "whole":
        from tilewave.pipeline.upscale_window import reference_upscale

        pixels = reader.read(0, reader.shape[1], 0, reader.shape[2])
        result = reference_upscale(model, pixels)
        del pixels
        t2 = time.perf_counter()
        out[...] = result
        write_s = time.perf_counter() - t2
    elif method == "naive":
        result = np.zeros((reader.shape[0], *grid.out_shape), reader.dtype)

        def into_ram(y0: int, x0: int, core: np.ndarray) -> None:
            result[:, y0 : y0 + core.shape[1], x0 : x0 + core.shape[2]] = core

        tile_loop(model, grid, mode, lambda w: reader.read(*w), into_ram)
        t2 = time.perf_counter()
        out[...] = result
        write_s = time.perf_counter() - t2
    elif method == "bare":
        writer = ArrayWriter(output_path)
        tile_loop(model, grid, mode, lambda w: reader.read(*w), writer.write)
    else:
        if mode != "halo":
            raise ValueError(f"{model_name} needs its neighbours' contexts ({mode} mode); "
                             "map_overlap cannot pass them")
        _dask_upscale(input_path, output_path, model, grid, threads)
    levels, pyramid_s = 0, 0.0
    if pyramid and method in ("bare", "dask"):
        t2 = time.perf_counter()
        levels = dask_pyramid(output_path, max(threads, 2))
        pyramid_s = time.perf_counter() - t2
    seconds = time.perf_counter() - t1
    return {"method": method, "model": model_name, "scale": grid.scale, "tile": tile,
            "halo": grid.halo, "tiles": grid.count if method != "whole" else 1,
            "input_shape": list(reader.shape), "threads": threads,
            "load_seconds": round(t1 - t0, 3), "seconds": round(seconds, 3),
            "write_seconds": round(write_s, 3), "pyramid_levels": levels,
            "pyramid_seconds": round(pyramid_s, 3)}


def _dask_upscale(input_path: str, output_path: str, model: Any, grid: Any, threads: int) -> None:
    import dask
    import dask.array as da

    from tilewave.pipeline.tile_work import TileSetup, process_tile

    source = da.from_zarr(input_path).rechunk((-1, grid.tile, grid.tile))
    s = grid.scale
    if min(source.chunks[1] + source.chunks[2]) < grid.halo:
        # map_overlap would merge such a chunk with its neighbour: no longer tilewave's tiles.
        raise ValueError(f"an edge tile is narrower than the halo {grid.halo}; pick another --tile")

    def upscale_block(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        row, col = block_info[0]["chunk-location"][1:]  # type: ignore[index]
        written: list[np.ndarray] = []
        # The block is the tile's read window (depth = halo, no boundary padding).
        setup = TileSetup(grid=grid, mode="halo", model=model, read=lambda _window: block,
                          write=lambda _y, _x, core: written.append(core))
        process_tile(setup, row, col)
        return written[0]

    upscaled = da.map_overlap(
        upscale_block, source, depth={0: 0, 1: grid.halo, 2: grid.halo}, boundary="none",
        trim=False, dtype=source.dtype,
        chunks=(source.chunks[0], tuple(n * s for n in source.chunks[1]),
                tuple(n * s for n in source.chunks[2])))
    with dask.config.set(scheduler="threads", num_workers=threads):
        upscaled.to_zarr(output_path, overwrite=True)


def dask_pyramid(output_path: str, threads: int, smallest: int = 1024) -> int:
    """Write the pyramid levels of the ``(c, y, x)`` array at ``output_path`` with dask;
    returns how many levels were written."""
    import dask
    import dask.array as da

    level = da.from_zarr(output_path)
    chunks = level.chunksize
    count = 0
    with dask.config.set(scheduler="threads", num_workers=threads):
        while max(level.shape[1:]) > smallest:
            _, h, w = level.shape
            padded = da.pad(level, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
            mean = da.coarsen(np.mean, padded.astype(np.float32), {1: 2, 2: 2})
            if np.issubdtype(level.dtype, np.integer):
                top = np.iinfo(level.dtype).max
                down = da.clip(da.round(mean), 0, top).astype(level.dtype)
            else:
                down = mean.astype(level.dtype)
            count += 1
            path = f"{output_path}.levels/{count}"
            down.rechunk((chunks[0], min(chunks[1], down.shape[1]), min(chunks[2], down.shape[2]))
                         ).to_zarr(path, overwrite=True)
            level = da.from_zarr(path)
    return count


def cap_memory(gib: float) -> None:
    """Limit this process's data segment (heap and anonymous mappings) to ``gib``."""
    limit = int(gib * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or \
        "cannot allocate memory" in text or "unable to allocate" in text


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("method", choices=METHODS)
    p.add_argument("input", help="(c, y, x) Zarr v3 array")
    p.add_argument("output", help="Zarr array to create (must not exist)")
    p.add_argument("--model", required=True)
    p.add_argument("--scale", type=int, default=None)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (dask: scheduler threads of one torch thread each)")
    p.add_argument("--pyramid", action="store_true",
                   help="bare and dask: add the pyramid levels tilewave's output has")
    p.add_argument("--memory-cap-gib", type=float, default=None,
                   help="fail with an allocation error past this much memory (RLIMIT_DATA)")
    args = p.parse_args(argv)
    if os.path.exists(args.output):
        p.error(f"output {args.output!r} exists; remove it first")
    if args.memory_cap_gib:
        cap_memory(args.memory_cap_gib)
    try:
        result = run(args.method, args.input, args.output, args.model, args.tile, args.scale,
                     args.threads, args.pyramid)
    except Exception as exc:
        if not _is_out_of_memory(exc):
            raise
        print(json.dumps({"method": args.method, "error": "out of memory",
                          "detail": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}))
        return OUT_OF_MEMORY
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
