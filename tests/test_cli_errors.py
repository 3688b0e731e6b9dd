"""The command line's handling of bad input: ``python -m tilewave.cli`` in child processes.

Every refusal must exit 2 with one ``tilewave: error: ...`` line on stderr, no traceback,
the input left byte for byte as it was, and no output that looks finished. All of these
are refused before any tile runs, so nothing here starts Ray (``--local`` runs the one
successful job in-process). Each command is a real ``python -m tilewave.cli`` process, two
at a time: a refusal imports neither torch nor Ray, so each costs a fraction of a second.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import imagecodecs
import numpy as np
import pytest
import tifffile
import torch
import zarr
from helpers import CodeRunningPayload, random_image
from safetensors.torch import save_file

# Every case runs ``python -m tilewave.cli`` as a user would.
pytestmark = pytest.mark.subprocess

TIMEOUT_S = 240
PNG_SHAPE = (3, 70, 90)  # (c, h, w): a 3 x 3 grid of 32-pixel tiles
TILE = 32

@dataclasses.dataclass
class Run:
    args: list[str]
    #: Files or folders that the command must leave exactly as they were.
    keep: list[pathlib.Path]
    before: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)
    after: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.splitlines()


@dataclasses.dataclass
class Results:
    """Every command's :class:`Run`, by name."""

    runs: dict[str, Run]

    def __getitem__(self, name: str) -> Run:
        return self.runs[name]


def snapshot(paths: list[pathlib.Path]) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every file under ``paths`` (missing paths included)."""
    out: dict[str, tuple[str, int]] = {}
    for root in paths:
        if not root.exists():
            out[str(root)] = ("missing", 0)
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def cli_env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "disabled"}


def execute(run: Run, cwd: pathlib.Path) -> Run:
    """Run ``python -m tilewave.cli ARGS`` as a user would, noting what it left."""
    run.before = snapshot(run.keep)
    proc = subprocess.run([sys.executable, "-m", "tilewave.cli", *run.args], cwd=cwd,
                          capture_output=True, text=True, timeout=TIMEOUT_S, env=cli_env())
    run.returncode, run.stdout, run.stderr = proc.returncode, proc.stdout, proc.stderr
    run.after = snapshot(run.keep)
    return run


def smooth_image(shape: tuple[int, int, int]) -> np.ndarray:
    c, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    planes = [60 + 50 * np.sin(yy / 9 + k) + 40 * np.cos(xx / 13 - k) for k in range(c)]
    return np.clip(np.stack(planes), 0, 255).astype(np.uint8)


def hwc(img: np.ndarray) -> np.ndarray:
    return np.array(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1), order="C", copy=True)


def write_png(path: pathlib.Path, img: np.ndarray) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(imagecodecs.png_encode(hwc(img)))
    return path


def write_tiff(path: pathlib.Path, data: np.ndarray, **kw) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, data, **kw)
    return path


# ------------------------------------------------------------------ the commands


def _with_dimensions(path: pathlib.Path, width: int, height: int) -> bytes:
    """The bytes of a classic TIFF with its ImageWidth/ImageLength tags rewritten."""
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tf:
        for name, value in (("ImageWidth", width), ("ImageLength", height)):
            entry = tf.pages[0].tags[name].offset  # 12-byte IFD entry: code, type, count, value
            data[entry + 2 : entry + 12] = (4).to_bytes(2, "little") + (1).to_bytes(4, "little") \
                + value.to_bytes(4, "little")
    return bytes(data)


def _error_cases(root: pathlib.Path) -> dict[str, Run]:
    """Commands refused on their input or options alone: name -> Run."""
    rng = np.random.default_rng(1)
    rgb = random_image((3, 64, 80), "uint8", seed=2)
    cases: dict[str, Run] = {}

    def case(name: str, input_path: pathlib.Path, *extra: str, output: str = "out.zarr") -> None:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        cases[name] = Run(["upscale", str(input_path), str(folder / output), "--local", *extra],
                          [input_path])

    case("missing", root / "missing" / "missing.tif")

    empty = root / "empty" / "empty.tif"
    empty.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    case("empty", empty)

    text = root / "text" / "notes.tif"
    text.parent.mkdir(parents=True)
    text.write_text("this is not an image\nbut it is named like one\n")
    case("text", text)

    full = write_tiff(root / "truncated" / "full.tif", hwc(rgb), tile=(16, 16),
                      photometric="rgb")
    data = full.read_bytes()
    cut = root / "truncated" / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    # Cut just after the header, inside the table of tile offsets.
    with tifffile.TiffFile(full) as tf:
        at = tf.pages[0].tags["TileOffsets"].valueoffset + 8
    cut_header = root / "truncated_header" / "cut.tif"
    cut_header.parent.mkdir(parents=True)
    cut_header.write_bytes(data[:at])
    full.unlink()
    case("truncated", cut)
    case("truncated_header", cut_header, "--quiet")

    case("int32", write_tiff(root / "int32" / "in.tif",
                             rng.integers(0, 1000, (40, 50), dtype=np.int32)))
    case("complex64", write_tiff(root / "complex64" / "in.tif",
                                 (rng.random((40, 50)) + 1j).astype(np.complex64)))
    case("bool", write_tiff(root / "bool" / "in.tif", rng.random((40, 50)) > 0.5))
    case("z_stack", write_tiff(root / "z_stack" / "in.tif",
                               rng.integers(0, 255, (5, 40, 50), dtype=np.uint8),
                               photometric="minisblack", metadata={"axes": "ZYX"}))

    # Headers that lie: dimensions of 3 billion pixels a side, and a width of zero.
    base = write_tiff(root / "lying" / "base.tif", hwc(rgb)[:64, :64], tile=(16, 16),
                      photometric="rgb")
    for name, (width, height) in (("absurd_size", (3_000_000_000, 3_000_000_000)),
                                  ("zero_size", (0, 64))):
        cases_path = root / name / "in.tif"
        cases_path.parent.mkdir(parents=True)
        cases_path.write_bytes(_with_dimensions(base, width, height))
        case(name, cases_path)
    base.unlink()

    nan = rng.random((40, 50)).astype(np.float32)
    nan[30, 7] = np.nan
    case("nan_pixels", write_tiff(root / "nan_pixels" / "in.tif", nan), "--quiet")

    good = write_png(root / "good" / "in.png", rgb)
    case("unknown_model", good, "--model", "no-such-model")
    case("context_with_bicubic", good, "--mode", "context")
    weights = root / "weights"
    weights.mkdir()
    case("weights_missing", good, "--model", str(weights / "absent.pth"))
    torch.save({"conv.weight": torch.zeros(1), "payload": CodeRunningPayload(weights / "pwned")},
               weights / "evil.pth")
    case("weights_malicious", good, "--model", str(weights / "evil.pth"))
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(weights / "mystery.safetensors"))
    case("weights_unknown_arch", good, "--model", str(weights / "mystery.safetensors"))

    user_dir = root / "user_dir" / "my-results"
    user_dir.mkdir(parents=True)
    (user_dir / "thesis-notes.txt").write_text("do not delete\n")
    cases["overwrite_user_dir"] = Run(
        ["upscale", str(good), str(user_dir), "--local", "--overwrite"], [good, user_dir])

    # Output locations that cannot be created, found before anything starts.
    case("output_in_proc", good, output="/proc/tilewave-out.zarr")
    case("output_in_sys", good, output="/sys/tilewave-out.zarr")
    a_file = root / "output_under_file" / "a-file"
    a_file.parent.mkdir()
    a_file.write_text("a user's file\n")
    cases["output_under_file"] = Run(
        ["upscale", str(good), str(a_file / "sub" / "out.zarr"), "--local"], [good, a_file])

    same = write_png(root / "same" / "in.png", rgb)
    cases["output_is_input"] = Run(
        ["upscale", str(same), str(same), "--local", "--overwrite"], [same])

    # Header intact, one zlib tile zeroed: found only when the pixels are read.
    corrupt = write_tiff(root / "corrupt" / "in.tif", hwc(rgb), tile=(16, 16),
                         photometric="rgb", compression="zlib")
    with tifffile.TiffFile(corrupt) as tf:
        o, n = tf.pages[0].dataoffsets[3], tf.pages[0].databytecounts[3]
    damaged = bytearray(corrupt.read_bytes())
    damaged[o : o + n] = b"\x00" * n
    corrupt.write_bytes(bytes(damaged))
    case("corrupt_tile", corrupt, "--quiet")
    return cases


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> Results:
    root = tmp_path_factory.mktemp("cli")
    scratch = root / "_server"
    scratch.mkdir()
    img = smooth_image(PNG_SHAPE)
    base_input = write_png(root / "base" / "in.png", img)
    base_output = root / "base" / "out.zarr"
    runs: dict[str, Run] = {
        "success": Run(["upscale", str(base_input), str(base_output), "--local",
                        "--tile", str(TILE)], [base_input]),
    }
    runs.update(_error_cases(root))
    other_input = write_png(root / "other" / "in.png", 255 - img)
    # Commands against the finished output (run after it), each on its own copy of it.
    runs["info"] = Run(["info", str(base_output)], [base_input, base_output])
    taken = root / "export_exists" / "taken.tif"
    taken.parent.mkdir()
    taken.write_bytes(b"a user's file")
    runs["export_exists"] = Run(["export", str(base_output), str(taken)], [base_output, taken])
    runs["export_ome_jpeg"] = Run(["export", str(base_output), str(root / "export_exists" / "f.tif"),
                                     "--compression", "jpeg", "--format", "ome"], [base_output])
    runs["export_not_zarr"] = Run(["export", str(base_input), str(root / "export_exists" / "n.tif")],
                                  [base_input])
    runs["format_without_tiff"] = Run(["upscale", str(base_input), str(root / "fmt" / "o.zarr"),
                                       "--local", "--format", "ome"], [base_input])
    runs["exists"] = Run(["upscale", str(base_input), str(root / "exists" / "out.zarr"),
                          "--local", "--tile", str(TILE)],
                         [base_input, root / "exists" / "out.zarr"])
    runs["resume_other_tile"] = Run(
        ["upscale", str(base_input), str(root / "resume_other_tile" / "out.zarr"),
         "--local", "--tile", str(2 * TILE), "--resume"],
        [base_input, root / "resume_other_tile" / "out.zarr"])
    runs["resume_other_input"] = Run(
        ["upscale", str(other_input), str(root / "resume_other_input" / "out.zarr"),
         "--local", "--tile", str(TILE), "--resume"],
        [other_input, root / "resume_other_input" / "out.zarr"])

    # The commands against the finished output need it first; the rest are independent.
    execute(runs["success"], root)
    for name in ("exists", "resume_other_tile", "resume_other_input"):
        if base_output.exists():
            shutil.copytree(base_output, root / name / "out.zarr")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda run: execute(run, root),
                      [run for name, run in runs.items() if name != "success"]))
    return Results(runs)


# -------------------------------------------------------------------- assertions


def assert_refused(run: Run, *words: str) -> str:
    """Exit 2, one ``tilewave: error:`` line naming the problem, nothing changed."""
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, run.stderr
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert len(run.error_lines) == 1, run.stderr
    line = run.error_lines[0]
    assert line.startswith("tilewave: error: "), line
    for word in words:
        assert word in line, (word, line)
    assert run.after == run.before, "an input or an existing output was changed"
    return line


def assert_no_output(run: Run) -> None:
    output = pathlib.Path(run.args[2])
    assert not output.exists(), f"{output} was created by a refused run"


def looks_complete(output: pathlib.Path) -> bool:
    """An OME-Zarr group whose job is recorded as complete, in the group attributes (a
    finished job) or in a ``.tilewave/job.json`` left beside it."""
    try:
        group = json.loads((output / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    job = group.get("attributes", {}).get("tilewave", {})
    if isinstance(job, dict) and job.get("complete"):
        return True
    state = output / ".tilewave" / "job.json"
    return state.is_file() and bool(json.loads(state.read_text()).get("complete"))


# ------------------------------------------------------------------ input errors


INPUT_ERRORS = {
    "missing": ("does not exist", "missing.tif"),
    "empty": ("empty file", "empty.tif"),
    "text": ("not a TIFF, PNG, JPEG or Zarr image", "notes.tif"),
    "truncated": ("truncated", "cut.tif"),
    "int32": ("pixel type int32", "uint8, uint16 and float32"),
    "complex64": ("pixel type complex64", "uint8, uint16 and float32"),
    "bool": ("pixel type bool", "uint8, uint16 and float32"),
    "z_stack": ("5 planes", "'Z'", "single plane"),
    "absurd_size": ("in.tif", "damaged or truncated"),
    "zero_size": ("in.tif", "no pixels"),
    "nan_pixels": ("in.tif", "NaN or infinite values", "x=7, y=30"),
}


@pytest.mark.parametrize("name", list(INPUT_ERRORS))
def test_bad_input_is_refused(cli, name):
    run = cli[name]
    assert_refused(run, *INPUT_ERRORS[name])
    assert_no_output(run)


def test_tiff_cut_inside_its_header_is_refused(cli):
    run = cli["truncated_header"]
    # Whatever the message, a blank image must not be passed off as a finished job.
    assert not looks_complete(pathlib.Path(run.args[2]))
    assert_refused(run, "cut.tif")


def test_corrupt_tile_is_refused(cli):
    run = cli["corrupt_tile"]
    assert_refused(run, "in.tif")
    assert not looks_complete(pathlib.Path(run.args[2]))


# --------------------------------------------------------------- option errors


def test_unknown_model_is_refused(cli):
    run = cli["unknown_model"]
    assert_refused(run, "unknown model", "'no-such-model'", "bicubic", "prefix-sum")
    assert_no_output(run)


WEIGHTS_ERRORS = {
    "weights_missing": ("absent.pth", "does not exist"),
    "weights_malicious": ("evil.pth", "refusing to load", "Python objects", ".safetensors"),
    "weights_unknown_arch": ("mystery.safetensors", "no architecture"),
}


@pytest.mark.parametrize("name", list(WEIGHTS_ERRORS))
def test_bad_weights_file_is_refused(cli, name):
    run = cli[name]
    assert_refused(run, *WEIGHTS_ERRORS[name])
    assert_no_output(run)
    assert not (pathlib.Path(run.args[1]).parents[1] / "weights" / "pwned").exists()


EXPORT_ERRORS = {
    "export_exists": ("taken.tif", "exists", "--overwrite"),
    "export_not_zarr": ("not an OME-Zarr image", "tilewave upscale"),
    "format_without_tiff": ("--format", ".tif", "tilewave export"),
}


@pytest.mark.parametrize("name", list(EXPORT_ERRORS))
def test_bad_export_is_refused(cli, name):
    assert_refused(cli[name], *EXPORT_ERRORS[name])


def test_export_succeeds_and_leaves_its_source_untouched(cli):
    """Beside the refusals, a real export of the same output: the source is only read."""
    run = cli["export_ome_jpeg"]
    assert run.returncode == 0, run.stderr
    assert run.after == run.before
    assert tifffile.TiffFile(run.args[2]).is_ome


def test_context_mode_with_bicubic_is_refused(cli):
    run = cli["context_with_bicubic"]
    assert_refused(run, "'bicubic'", "'context'", "halo or blend", "--mode")
    assert_no_output(run)


# --------------------------------------------------------------- output errors


def test_existing_output_without_overwrite_is_refused(cli):
    run = cli["exists"]
    line = assert_refused(run, "exists", "--overwrite", "--resume")
    assert "out.zarr" in line
    assert looks_complete(pathlib.Path(run.args[2]))  # still the finished earlier output


def test_overwrite_refuses_to_delete_a_user_folder(cli):
    run = cli["overwrite_user_dir"]
    assert_refused(run, "not a Zarr store", "will not delete", "my-results")
    folder = pathlib.Path(run.args[2])
    assert sorted(p.name for p in folder.iterdir()) == ["thesis-notes.txt"]
    assert (folder / "thesis-notes.txt").read_text() == "do not delete\n"


@pytest.mark.parametrize("name, words", [
    ("output_in_proc", ("/proc/tilewave-out.zarr", "choose a writable location")),
    ("output_in_sys", ("/sys/tilewave-out.zarr", "choose a writable location")),
    ("output_under_file", ("a-file", "is a file, not a folder")),
])
def test_output_that_cannot_be_created_is_refused(cli, name, words):
    run = cli[name]
    assert_refused(run, *words)
    assert not pathlib.Path(run.args[2]).exists()


def test_output_equal_to_input_is_refused(cli):
    run = cli["output_is_input"]
    assert_refused(run, "overlaps the input")
    assert pathlib.Path(run.args[1]).is_file()


def test_resume_with_other_tile_is_refused(cli):
    run = cli["resume_other_tile"]
    assert_refused(run, "different settings", "tile", f"was {TILE}", f"now {2 * TILE}",
                   "--overwrite")
    assert looks_complete(pathlib.Path(run.args[2]))


def test_resume_with_other_input_is_refused(cli):
    run = cli["resume_other_input"]
    assert_refused(run, "different input", "not ", "--overwrite")
    assert looks_complete(pathlib.Path(run.args[2]))


def test_resume_with_other_input_names_the_inputs(cli):
    run = cli["resume_other_input"]
    line = run.error_lines[0]
    assert run.args[1] in line, line  # the new input, /.../other/in.png


# --------------------------------------------------------------------- success


def test_local_upscale_of_png_succeeds(cli):
    run = cli["success"]
    assert "Traceback" not in run.stderr
    assert run.returncode == 0, run.stderr
    assert run.after == run.before
    assert "9 of 9 tiles" in run.stdout and "bicubic x2" in run.stdout, run.stdout
    output = pathlib.Path(run.args[2])
    assert looks_complete(output)
    c, h, w = PNG_SHAPE
    out = zarr.open_array(str(output / "0"), mode="r")[:]
    assert out.shape == (c, 2 * h, 2 * w) and out.dtype == np.uint8
    # Each 2 x 2 output block averages close to its input pixel on this smooth image.
    blocks = out.reshape(c, h, 2, w, 2).mean(axis=(2, 4))
    assert np.abs(blocks - smooth_image(PNG_SHAPE)).mean() < 2
    assert not (output / ".tilewave" / "work.zarr").exists()


def test_info_reports_all_tiles_done(cli):
    run = cli["info"]
    assert "Traceback" not in run.stderr
    assert run.returncode == 0, run.stderr
    assert run.after == run.before
    lines = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip()
             for line in run.stdout.splitlines() if "  " in line}
    assert lines["tiles done"] == "9 of 9", run.stdout
    assert lines["format"] == "ome-zarr"
    assert lines["size"] == f"{2 * PNG_SHAPE[2]} x {2 * PNG_SHAPE[1]} pixels"
    assert lines["written by"].endswith(f"bicubic x2, halo mode, tile {TILE}")


def test_ray_folder_too_deep_for_sockets_is_refused(tmp_path):
    """Ray's unix sockets live under RAY_TMPDIR: a folder too deep for them is a setting
    to change, said in one line, and the output it was about to fill is not left behind."""
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    source = tmp_path / "in.png"
    source.write_bytes(imagecodecs.png_encode(random_image((70, 90, 3), "uint8")))
    out = tmp_path / "out.zarr"
    proc = subprocess.run([sys.executable, "-m", "tilewave.cli", "upscale", str(source), str(out),
                           "--quiet", "--executor", "ray"], capture_output=True, text=True,
                          timeout=TIMEOUT_S, env={**cli_env(), "RAY_TMPDIR": str(deep)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "RAY_TMPDIR" in lines[0] and "shorter" in lines[0], lines
    assert not out.exists()
