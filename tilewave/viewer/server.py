"""The viewer's web server: the page, tiles as PNG, the image's facts and a job's progress,
on 127.0.0.1 only."""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import numpy as np

from ..errors import SettingsError
from .render import Stretch, png
from .sources import TILE, Baseline, InputSide, OutputPyramid, TileKey

_TILE_PATH = re.compile(r"^/tiles/(output|input)/(\d+)/(\d+)/(\d+)\.png$")
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
           "/viewer.js": ("viewer.js", "text/javascript; charset=utf-8")}


class Viewer:
    """What the server serves: an output, optionally its input, and the shared stretch."""

    def __init__(self, output: str, input_path: str | None = None, baseline: Baseline = "bicubic"):
        self.output = OutputPyramid(output)
        # From the sizes, not the job's settings: a cascade's record holds its last
        # stage's scale.
        self.input = InputSide(input_path, self.output.shape[2], baseline) if input_path else None
        smallest = self.output.levels[-1]
        self.stretch = Stretch(np.asarray(smallest[:, :1024, :1024]), self.output.metadata.get("nodata"))

    def info(self) -> dict[str, Any]:
        c, h, w = self.output.shape
        size = self.output.pixel_size()
        return {"name": self.output.path.rstrip("/").rsplit("/", 1)[-1], "width": w, "height": h,
                "channels": c, "tile": TILE, "input": self.input is not None,
                "levels": [list(a.shape[1:]) for a in self.output.levels],
                "pixel_size": list(size) if size else None}

    def tile(self, side: str, key: TileKey) -> bytes | None:
        if side == "output":
            pixels = self.output.read(key)
        elif self.input is not None:
            pixels = self.input.read(key, self.output.shape[1:])
        else:
            pixels = None
        return None if pixels is None else png(pixels, self.stretch)

    def handle(self, path: str) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` for a GET of ``path``."""
        route = path.split("?", 1)[0]
        if route in _STATIC:
            name, kind = _STATIC[route]
            return 200, kind, resources.files(__package__).joinpath("static", name).read_bytes()
        if route == "/info":
            return 200, "application/json", json.dumps(self.info()).encode()
        if route == "/progress":
            return 200, "application/json", json.dumps(self.output.progress()).encode()
        match = _TILE_PATH.match(route)
        if match:
            side, level, row, col = match.group(1), *map(int, match.groups()[1:])
            body = self.tile(side, TileKey(level, row, col))
            if body is not None:
                return 200, "image/png", body
        return 404, "text/plain", b"not found"


def make_server(viewer: Viewer, port: int = 0) -> ThreadingHTTPServer:
    """A server for ``viewer`` on 127.0.0.1 (``port`` 0: any free port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                status, kind, body = viewer.handle(self.path)
            except Exception as exc:  # a damaged chunk: the page shows the tile as missing
                status, kind, body = 500, "text/plain", str(exc).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                # A running job changes tiles and progress: never cache them.
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page moved on (panned, reloaded, closed) before the tile arrived

        def log_message(self, format: str, *args: Any) -> None:  # quiet: no line per tile
            pass

    if not 0 <= port <= 65535:
        raise SettingsError(f"--port must be between 0 and 65535, not {port}")
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as exc:
        raise SettingsError(f"cannot serve on 127.0.0.1:{port} ({exc.strerror or exc}); choose "
                            "another --port, or 0 for any free one") from None
