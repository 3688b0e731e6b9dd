"""The scheduler's decisions, tested without Ray or pixels."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilewave.errors import SettingsError
from tilewave.pipeline.grid import TileGrid
from tilewave.pipeline.wavefront import ContextTable, Wavefront


@st.composite
def grids(draw):
    tile = draw(st.integers(1, 9))
    return TileGrid(
        height=draw(st.integers(1, 40)),
        width=draw(st.integers(1, 40)),
        tile=tile,
        scale=draw(st.integers(1, 4)),
        halo=draw(st.integers(0, 5)),
        overlap=draw(st.integers(0, tile)),
    )


@given(grids())
def test_cores_partition_the_image_and_output(grid):
    owner = [[None] * grid.width for _ in range(grid.height)]
    for tile in grid:
        y0, y1, x0, x1 = tile.core
        assert 0 < y1 - y0 <= grid.tile and 0 < x1 - x0 <= grid.tile
        for y in range(y0, y1):
            for x in range(x0, x1):
                assert owner[y][x] is None, "a pixel owned twice"
                owner[y][x] = tile.index
        oy0, oy1, ox0, ox1 = grid.out_window(tile.core)
        # Output windows start on chunk boundaries: each tile writes only its own chunk.
        assert oy0 % grid.out_chunk[0] == 0 and ox0 % grid.out_chunk[1] == 0
        assert oy1 - oy0 <= grid.out_chunk[0] and ox1 - ox0 <= grid.out_chunk[1]
    assert all(o is not None for row in owner for o in row)


@given(grids())
def test_read_window_holds_prediction_plus_halo(grid):
    for tile in grid:
        py0, py1, px0, px1 = tile.predicted
        ry0, ry1, rx0, rx1 = tile.read
        assert (py0, px0) == tile.core[0::2]
        assert py1 == min(grid.height, tile.core[1] + grid.overlap)
        assert px1 == min(grid.width, tile.core[3] + grid.overlap)
        assert ry0 == max(0, py0 - grid.halo) and rx0 == max(0, px0 - grid.halo)
        assert ry1 == min(grid.height, py1 + grid.halo) and rx1 == min(grid.width, px1 + grid.halo)


def test_grid_rejects_bad_settings():
    with pytest.raises(SettingsError, match="--tile"):
        TileGrid(10, 10, 0, 2)
    with pytest.raises(SettingsError, match="--overlap"):
        TileGrid(10, 10, 4, 2, overlap=5)
    with pytest.raises(SettingsError, match="pixels"):
        TileGrid(0, 10, 4, 2)


def _simulate(rows, cols, dependent, done, rng, capacity, rows_ahead=None, steps=1):
    """Run the wavefront with a random completion order; return the start order (tiles
    when ``steps`` is 1, else (tile, step) nodes), the peak number of live contexts and
    the contexts freed."""
    wave = Wavefront(rows, cols, dependent, done, rows_ahead, steps=steps)
    table: ContextTable[str] = ContextTable(rows, cols)
    finished = {(r, c, k) for r, c in done for k in range(steps)}
    running: list[tuple[int, int, int]] = []
    started = []
    freed: set = set()
    while not wave.finished:
        while len(running) < capacity and wave.has_ready():
            node = wave.pop_ready()
            for dep in wave.dependencies(node):
                assert dep in finished, f"{node} started before its dependency {dep}"
            inbound = table.inbound(node[:2], node[2])
            for name, value in inbound.items():
                if value is not None:
                    assert value.endswith(f"{name}@{node[2]}"), "context delivered wrongly"
            started.append(node if steps > 1 else node[:2])
            running.append(node)
        assert running, "deadlock: nothing runs but tiles remain"
        node = running.pop(rng.randrange(len(running)))
        if dependent:
            arrives = {"right": "left", "below": "top", "below_right": "top_left"}
            for direction, name in arrives.items():
                table.put(node[:2], direction, f"{node[:2]}->{name}@{node[2]}", node[2])
        wave.finish(node)
        finished.add(node)
        for key in table.release(node[:2], node[2]):
            assert key not in freed, "context freed twice"
            freed.add(key)
    assert len(table) == 0, "contexts left alive after the last tile"
    return started, table.peak, freed


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.booleans(), st.integers(1, 6),
       st.integers(0, 2**32 - 1), st.floats(0, 1), st.one_of(st.none(), st.integers(0, 4)))
def test_every_tile_runs_once_and_contexts_die_with_their_consumer(rows, cols, dependent,
                                                                    capacity, seed, done_frac,
                                                                    rows_ahead):
    rng = random.Random(seed)
    # A resumed run: a prefix in raster order is done already (a ledger is always such a
    # set for dependent runs, and an arbitrary one for independent runs).
    all_tiles = [(r, c) for r in range(rows) for c in range(cols)]
    n_done = int(done_frac * len(all_tiles))
    done = set(all_tiles[:n_done]) if dependent else set(rng.sample(all_tiles, n_done))
    started, peak, freed = _simulate(rows, cols, dependent, done, rng, capacity, rows_ahead)
    assert sorted(started) == sorted(set(all_tiles) - done)
    assert len(started) == len(set(started))
    if dependent and not done:
        expected = 3 * rows * cols - 2 * rows - 2 * cols + 1  # one per grid edge to a consumer
        assert len(freed) == expected


@pytest.mark.parametrize("cols", [1, 4, 16, 64])
@pytest.mark.parametrize("rows_ahead", [0, 1, 3])
def test_live_contexts_stay_a_frontier(cols, rows_ahead):
    """Live contexts stay within rows_ahead + 1 rows of tiles, however tall the image
    and however unevenly tiles finish."""
    for seed in range(5):
        _, peak, _ = _simulate(60, cols, True, set(), random.Random(seed), 4, rows_ahead)
        assert peak <= 3 * cols * (rows_ahead + 1)


def test_without_a_row_cap_the_first_column_races_ahead():
    """Why the cap exists: uncapped, a slow tile lets column 0 run down the image."""
    peaks = [_simulate(60, 4, True, set(), random.Random(s), 2)[1] for s in range(5)]
    assert max(peaks) > 3 * 4 * 2


def test_independent_tiles_start_in_raster_order():
    wave = Wavefront(3, 4, dependent=False)
    order = [wave.pop_ready() for _ in range(12)]
    assert order == [(r, c, 0) for r in range(3) for c in range(4)]
    assert wave.pop_ready() is None


def test_finishing_an_unstarted_tile_is_a_bug():
    wave = Wavefront(2, 2, dependent=True)
    with pytest.raises(ValueError):
        wave.finish((1, 1, 0))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 7), st.integers(1, 7), st.booleans(), st.integers(1, 4),
       st.integers(2, 5), st.integers(0, 2**32 - 1), st.floats(0, 1))
def test_every_step_of_every_tile_runs_once_after_its_dependencies(rows, cols, dependent,
                                                                   capacity, steps, seed,
                                                                   done_frac):
    rng = random.Random(seed)
    all_tiles = [(r, c) for r in range(rows) for c in range(cols)]
    done = set(all_tiles[: int(done_frac * len(all_tiles))])
    started, _, freed = _simulate(rows, cols, dependent, done, rng, capacity, 2, steps)
    expected = [(r, c, k) for r, c in all_tiles if (r, c) not in done for k in range(steps)]
    assert sorted(started) == sorted(expected)
    if dependent and not done:
        assert len(freed) == steps * (3 * rows * cols - 2 * rows - 2 * cols + 1)


def test_a_resumed_tile_continues_from_its_next_step():
    wave = Wavefront(1, 2, dependent=True, done={(0, 0)}, steps=3, partial={(0, 1): 2})
    assert wave.pop_ready() == (0, 1, 2)
    assert wave.pop_ready() is None
    wave.finish((0, 1, 2))
    assert wave.finished and wave.steps_run((0, 1)) == 3


@pytest.mark.parametrize("steps", [1, 4, 16, 64])
def test_live_contexts_do_not_grow_with_the_steps(steps):
    """Preferring low steps, each step sweeps the image just behind the previous one:
    the contexts alive stay those of about one step's frontier."""
    one = max(_simulate(12, 8, True, set(), random.Random(s), 2, 3)[1] for s in range(3))
    peak = max(_simulate(12, 8, True, set(), random.Random(s), 2, 3, steps)[1] for s in range(3))
    assert peak <= 1.2 * one
