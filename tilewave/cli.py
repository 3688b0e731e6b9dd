"""The ``tilewave`` command line."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .errors import SettingsError, user_error
from .install import pip_hint
from .options import FLAGS_GIVEN, add_arguments, from_arguments, non_negative, positive, positive_float


class _Parser(argparse.ArgumentParser):
    """Argument errors in one line, like every other error: the usage is a ``--help`` away."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tilewave", description="Out-of-core super-resolution for gigapixel images.")
    p.add_argument("--version", action="version", version=f"tilewave {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_upscale(sub)
    _add_ingest(sub)
    _add_export(sub)
    _add_info(sub)
    _add_models(sub)
    _add_train(sub)
    _add_tune(sub)
    _add_view(sub)
    _add_demo(sub)
    return p


def _add_upscale(sub: Any) -> None:
    up = sub.add_parser("upscale", help="upscale an image into an OME-Zarr image",
                        usage="tilewave upscale [options] INPUT OUTPUT\n"
                              "       tilewave upscale [options] INPUT [INPUT ...] --output-dir DIR",
                        description="Upscale INPUT (TIFF/SVS/OME-TIFF/GeoTIFF, PNG, JPEG, Zarr "
                        "or OME-Zarr) into the OME-Zarr image OUTPUT, tile by tile; or, with "
                        "--output-dir, many inputs (files, folders of images, quoted glob "
                        "patterns) in one run, each into DIR/NAME.zarr.")
    up.add_argument("paths", nargs="+", metavar="INPUT OUTPUT",
                    help="the input and the output; with --output-dir, the inputs")
    add_arguments(up)
    up.add_argument("--output-dir", metavar="DIR",
                    help="upscale every INPUT into DIR, each output named after its input; "
                    "one Ray start and one set of workers serve them all")
    up.add_argument("--suffix", default=".zarr", metavar="SUFFIX",
                    help="with --output-dir: the outputs' suffix, .zarr (OME-Zarr) or .tif "
                    "(pyramidal TIFF) (default: .zarr)")
    up.add_argument("--json", action="store_true", help="print the report as JSON")


def _add_ingest(sub: Any) -> None:
    ing = sub.add_parser("ingest", help="copy an image into a chunked Zarr v3 array",
                         description="Copy INPUT into a (c, y, x) Zarr v3 array at STORE, "
                         "streaming, chunk by chunk.")
    ing.add_argument("input")
    ing.add_argument("store")
    ing.add_argument("--chunk", type=positive, default=512, metavar="PX",
                     help="chunk size in pixels (default: 512)")
    ing.add_argument("--overwrite", action="store_true", help="replace an existing store")
    ing.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_export(sub: Any) -> None:
    ex = sub.add_parser("export", help="write an OME-Zarr output as a pyramidal TIFF",
                        description="Write the OME-Zarr image SOURCE (a tilewave output) with "
                        "every pyramid level to the tiled BigTIFF FILE: a slide TIFF that "
                        "OpenSlide reads, an OME-TIFF for Bio-Formats and QuPath, or a GeoTIFF "
                        "with overviews for GDAL and QGIS.")
    ex.add_argument("source")
    ex.add_argument("file")
    add_arguments(ex, ("tiff_format", "compression", "quality"), grouped=False)
    ex.add_argument("--tile", type=positive, default=512, metavar="PX",
                    help="TIFF tile size, a multiple of 16 (default: 512)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing FILE")
    ex.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def _add_info(sub: Any) -> None:
    info = sub.add_parser("info", help="describe an image or a tilewave output")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.add_argument("--difficulty", metavar="PNG",
                      help="also assess every tile (as --adaptive would) and draw the map: "
                      "grey = easy (bicubic), red = hard (model), brighter = more structure")
    info.add_argument("--tile", type=positive, default=256, metavar="PX",
                      help="tile size for --difficulty (default: 256)")


def _add_models(sub: Any) -> None:
    mo = sub.add_parser("models", help="list the available models",
                        description="List the registered models: scale, tiling modes, halo, "
                        "parameter count, sampler defaults of multi-step models, where the "
                        "weights come from and whether they are "
                        "installed. Any weights file spandrel recognises (.safetensors, .pth) "
                        "also works as --model PATH.")
    mo.add_argument("--json", action="store_true", help="print as JSON")


def _add_train(sub: Any) -> None:
    tr = sub.add_parser("train", help="train a UniBA model on your own images",
                        description="Train a UniBA super-resolution model on random crops of "
                        "your own high-resolution images (any format tilewave reads); run it "
                        "with `tilewave upscale --model OUTPUT.safetensors`.")
    tr.add_argument("images", nargs="+", help="training images")
    tr.add_argument("--output", required=True, help="weights file to write (.safetensors)")
    tr.add_argument("--scale", type=positive, default=2)
    tr.add_argument("--steps", type=positive, help="optimiser steps")
    tr.add_argument("--minutes", type=float, help="wall-clock budget (with or instead of --steps)")
    tr.add_argument("--batch", type=positive, default=8)
    tr.add_argument("--crop", type=positive, default=64, help="crop size in low-resolution pixels")
    tr.add_argument("--lr", type=float, default=1.5e-3, help="peak learning rate")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=positive, help="CPU threads (default: torch's)")
    tr.add_argument("--init", help="weights file to start from (fine-tuning; default with "
                    "--diffusion: the shipped uniba-x2 weights)")
    tr.add_argument("--diffusion", action="store_true",
                    help="train a multi-step bridge model like uniba-diff-x2: its added layers "
                    "start at zero, so training starts from the --init model")
    tr.add_argument("--quiet", action="store_true")


def _add_tune(sub: Any) -> None:
    tu = sub.add_parser("tune", help="fine-tune a model on your own scan",
                        description="Fine-tune a model on INPUT itself (self-supervised: crops "
                        "of the scan are the targets, their inputs are made the way the scan "
                        "was, downscaled x2 and re-compressed at its own JPEG quality) and "
                        "write weights that `tilewave upscale --model OUTPUT` runs. A strip "
                        "of the scan is held out: the weights that do best on it, the base "
                        "model's included, are written, so the result is never worse there.")
    tu.add_argument("input")
    tu.add_argument("-o", "--output", required=True, help="weights file to write (.safetensors)")
    tu.add_argument("--model", default="span-x2-scan",
                    help="model to start from: span-x2-scan (default), span-x2, uniba-x2-scan, "
                    "uniba-x2, or a weights file tune wrote")
    tu.add_argument("--minutes", type=positive_float, default=10.0,
                    help="training time (default: 10)")
    tu.add_argument("--steps", type=positive, help="stop after this many steps (as well)")
    tu.add_argument("--seed", type=int, default=0)
    tu.add_argument("--address", help="Ray cluster address (default: start a local instance)")
    tu.add_argument("--local", action="store_true", help="tune in this process, without Ray")
    tu.add_argument("--resume", action="store_true",
                    help="continue an interrupted tune from its checkpoint (OUTPUT.ckpt)")
    tu.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    tu.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    tu.add_argument("--json", action="store_true", help="print the training record as JSON")


def _add_view(sub: Any) -> None:
    vw = sub.add_parser("view", help="look at an output, beside its input, in a browser",
                        description="Serve a page on 127.0.0.1 that shows the OME-Zarr output "
                        "OUTPUT as a deep-zoom image from its pyramid, with INPUT (upscaled, "
                        "for comparison) beside it or under a swipe, both locked in pan and "
                        "zoom, a scale bar from the pixel size, and, while a job writes "
                        "OUTPUT, a map of its finished tiles. Nothing is fetched from "
                        "elsewhere. Stop with Ctrl-C.")
    vw.add_argument("output")
    vw.add_argument("input", nargs="?")
    vw.add_argument("--port", type=non_negative, default=0, help="port (default: any free one)")
    vw.add_argument("--baseline", choices=("bicubic", "nearest"), default="bicubic",
                    help="how the input is enlarged to the output's size (default: bicubic)")
    vw.add_argument("--no-browser", action="store_true", help="print the address only")


def _add_demo(sub: Any) -> None:
    demo = sub.add_parser("demo", help="upscale a real sample image with the defaults",
                          description="Upscale scikit-image's coffee photograph (600 x 400 RGB, "
                          "held out from uniba-x2's training) x2 with uniba-x2 on a local Ray "
                          "instance into ./tilewave-demo, and write a crop of the output where "
                          "the photo has the most detail beside the same region upscaled with "
                          "bicubic (replacing an earlier demo there).")
    demo.add_argument("--output-dir", default="tilewave-demo", metavar="DIR",
                      help="folder for the demo's files (default: tilewave-demo)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")


def _cmd_export(args: argparse.Namespace) -> int:
    from .storage.tiff_export import export_tiff

    report = export_tiff(args.source, args.file, kind=args.tiff_format,
                         compression=args.compression, quality=args.quality, tile=args.tile,
                         overwrite=args.overwrite, progress=not args.quiet)
    if not args.quiet:
        levels = ", ".join(f"{w} x {h}" for h, w in report.levels)
        print(f"wrote {report.path} ({report.kind}, {report.compression}, {report.dtype}, "
              f"{report.bytes / 2**20:.1f} MiB): levels {levels}")
    return 0


def _cmd_cohort(args: argparse.Namespace) -> int:
    from .api import run_cohort_options

    cohort = run_cohort_options(args.paths, args.output_dir, from_arguments(args), args.suffix)
    if args.json:
        print(json.dumps(cohort.as_dict()))
    elif args.progress:
        for outcome in cohort.outcomes:
            report = outcome.report
            if report is None:
                print(f"FAILED {outcome.input}: {outcome.error}")
            else:
                print(f"wrote {outcome.output}: {report.tiles_run} of {report.tiles} tiles run "
                      f"in {outcome.seconds:.1f} s")
        print(f"{len(cohort.outcomes) - len(cohort.failed)} of {len(cohort.outcomes)} inputs "
              f"done in {cohort.seconds:.1f} s" + (f"; {len(cohort.failed)} failed"
                                                   if cohort.failed else ""))
    return 1 if cohort.failed else 0


def _cmd_upscale(args: argparse.Namespace) -> int:
    from .api import run_upscale

    if args.output_dir is not None:
        return _cmd_cohort(args)
    if len(args.paths) != 2:
        raise SettingsError(f"give one INPUT and one OUTPUT (got {len(args.paths)} paths), or "
                            "several inputs with --output-dir DIR")
    args.input, args.output = args.paths
    report = run_upscale(args.input, args.output, from_arguments(args))
    if args.json:
        print(json.dumps(report.as_dict()))
    elif args.progress and report.workers == 0:
        print(f"{report.output} is already complete ({report.tiles} tiles); nothing to do")
    elif args.progress:
        c, h, w = report.shape
        print(f"wrote {report.output} ({w} x {h}, {c} channel{'s' * (c != 1)}, {report.dtype}): "
              f"{report.model} x{report.scale}, {report.mode} mode, {report.tiles_run} of "
              f"{report.tiles} tiles run in {report.seconds:.1f} s, {report.workers} at once"
              + (f" in {report.processes} worker process{'es' * (report.processes != 1)}"
                 if report.processes else " in this process")
              + (f"; {report.tiles_cheap} easy tiles took bicubic" if report.tiles_cheap else "")
              + ("; made consistent with the input (a back-projection pass, its tiles counted)"
                 if report.consistent else "")
              + ("; sampler " + ", ".join(f"{k.replace('_', ' ')} {_value(v)}"
                                          for k, v in report.sampler.items())
                 if report.sampler else "")
              + ("; one step at a time across the image (--schedule step)"
                 if report.schedule == "step" else "")
              + (f"; {report.steps_run} of {report.steps_total} sampler steps run "
                 f"({100 * (1 - report.steps_run / report.steps_total):.0f} % saved)"
                 if report.steps_total and report.steps_run < report.steps_total else ""))
    return 0


def _value(value: Any) -> str:
    """A sampler setting as the summary and `tilewave models` show it."""
    return repr(value) if isinstance(value, str) else f"{value:g}"


def _cmd_ingest(args: argparse.Namespace) -> int:
    from .api import ingest_image

    spec = ingest_image(args.input, args.store, chunk=args.chunk, overwrite=args.overwrite,
                        progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {spec.path}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .storage.describe import describe

    facts = describe(args.path)
    if args.difficulty:
        facts["difficulty"] = _difficulty_png(args.path, args.tile, args.difficulty)
    if args.json:
        print(json.dumps(facts, default=str))
    else:
        width = max(len(k) for k in facts)
        for key, value in facts.items():
            print(f"{key:<{width}}  {_fmt(value)}")
    return 0


def _difficulty_png(path: str, tile: int, png: str) -> str:
    import numpy as np
    from PIL import Image

    from .pipeline.difficulty import difficulty_map
    from .storage.inputs import lazy_pixels, open_input

    image = open_input(path)
    easy, structure = difficulty_map(lazy_pixels(image, tile), tile, image.metadata.get("nodata"))
    level = np.clip(structure / max(float(structure.max()), 1e-6), 0, 1)
    rgb = np.zeros((*easy.shape, 3), np.uint8)
    rgb[..., 0] = np.where(easy, 90, 120 + 135 * level)
    rgb[..., 1] = np.where(easy, 90, 30)
    rgb[..., 2] = np.where(easy, 90, 30)
    cell = max(1, min(16, 512 // max(easy.shape)))
    Image.fromarray(rgb).resize((easy.shape[1] * cell, easy.shape[0] * cell), Image.Resampling.NEAREST).save(png)
    return (f"{int(easy.sum())} of {easy.size} tiles of {tile} px easy "
            f"({100 * easy.mean():.0f} %); map in {png}")


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " x ".join(str(v) for v in value) if all(isinstance(v, int) for v in value) \
            else ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import available_models, describe_model
    from .models.ncnn_files import wheel_installed

    records: list[dict[str, Any]] = []
    for entry in available_models():
        if entry.listing is not None:  # described by its folder; the listing shows the family
            d = entry.listing()
        else:
            d = describe_model(entry.name)
        if entry.requires is None:
            installed = "built in"
        else:
            version = wheel_installed(entry.requires)
            installed = (f"yes ({entry.requires} {version})" if version
                         else f"no: {pip_hint(entry.extra)}")
        records.append({
            "name": entry.name,
            "scale": "any" if entry.scales is None else ",".join(map(str, entry.scales)),
            "modes": ",".join(d.modes), "halo": d.halo, "parameters": d.parameters,
            "weights": d.weights, "installed": installed, "description": d.description,
            "for": _purpose(entry, d),
            **({"sampler": d.sampler.as_dict(), "noise_max": d.noise_max} if d.sampler else {})})
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    for r in records:
        sampler = r.get("sampler")
        r["defaults"] = " ".join(f"--{k.replace('_', '-')} {_value(v)}" for k, v in sampler.items()
                                 if v != "") if sampler else "-"
    columns = ("name", "scale", "modes", "halo", "parameters", "defaults", "installed", "weights")
    rows = [columns] + [tuple(f"{r[c]:,}" if c == "parameters" else str(r[c]) for c in columns)
                        for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    print("\nwhat each is for:")
    name_width = max(len(r["name"]) for r in records)
    for r in records:
        print(f"  {r['name']:<{name_width}}  {r['for']}")
    return 0


def _purpose(entry: Any, d: Any) -> str:
    """What a model is for, as `tilewave models` says it: what it was trained on, and
    where a scan-aware model is the better choice."""
    if entry.diagnostic:
        return "checking the context scheduler (a closed-form answer), not upscaling"
    if entry.name == "bicubic":
        return "any image, any scale: no training, nothing invented; the baseline"
    text = d.trained_for or d.description
    if d.scan_variant:
        text += f"; on JPEG-compressed scans use {d.scan_variant}"
    return text


def _cmd_view(args: argparse.Namespace) -> int:
    from .viewer.server import Viewer, make_server

    server = make_server(Viewer(args.output, args.input, args.baseline), args.port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"tilewave: viewing {args.output} at {url} (Ctrl-C to stop)", flush=True)
    if not args.no_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.output_dir, progress=not args.quiet)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .errors import SettingsError
    from .models.uniba.train import TrainSettings, train

    if not args.output.endswith(".safetensors"):
        raise SettingsError(f"--output {args.output!r} must end in .safetensors")
    settings = TrainSettings(scale=args.scale, crop=args.crop, batch=args.batch, lr=args.lr,
                             steps=args.steps, minutes=args.minutes, seed=args.seed,
                             threads=args.threads, init=args.init, diffusion=args.diffusion)
    record = train(args.images, args.output, settings, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {args.output}: {record['steps']} steps in {record['wall_seconds']:.0f} s, "
              f"final L1 loss {record['loss']:.4f}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from .api import tune

    record = tune(args.input, args.output, model=args.model, minutes=args.minutes, steps=args.steps,
                  seed=args.seed, executor="local" if args.local else "ray", address=args.address,
                  resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    if args.json:
        print(json.dumps(record))
    elif not args.quiet:
        start, best, gain = record["start_score"], record["best_score"], record["held_out_gain_db"]
        verdict = (f"{start:.2f} -> {best:.2f} dB ({gain:+.2f} dB)" if gain > 0 else
                   f"no better than {record['tuned_from']} ({start:.2f} dB): its own weights were written")
        print(f"wrote {args.output}: {record['tuned_from']} tuned for {record['wall_seconds']:.0f} s "
              f"({record['steps']} steps); on the held-out strip of the scan {verdict}. "
              f"Run it with: tilewave upscale {args.input} OUTPUT --model {args.output}")
    return 0


COMMANDS = {"upscale": _cmd_upscale, "tune": _cmd_tune, "ingest": _cmd_ingest, "info": _cmd_info,
            "models": _cmd_models, "export": _cmd_export, "demo": _cmd_demo, "train": _cmd_train,
            "view": _cmd_view}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tilewave`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    given = FLAGS_GIVEN.set(True)
    try:
        return COMMANDS[args.command](args)
    except Exception as exc:
        error = user_error(exc)
        if error is None:
            raise  # a bug: its traceback is what a report needs
        print(f"tilewave: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("tilewave: interrupted; rerun the same command with --resume to continue",
              file=sys.stderr)
        return 130
    finally:
        FLAGS_GIVEN.reset(given)


def run() -> None:
    """The ``tilewave`` command: :func:`main`, then an exit that skips Python's teardown of
    the modules. A finished command needs none of it (files are closed, Ray is stopped,
    the exit handlers still run), and with torch loaded it takes 0.4 s, a sixth of a
    small job's."""
    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a reader that went away (`tilewave ... --json | head -c1`)
            code = code or 1
    os._exit(code)


if __name__ == "__main__":
    run()
