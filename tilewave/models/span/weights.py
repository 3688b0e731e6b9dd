"""SPAN networks in tilewave's own weights files: ``span-x2-scan`` and the output of
``tilewave tune`` from a SPAN model.

A file is safetensors with the network's state and, in its metadata, ``span`` (the
architecture's settings as JSON) and ``record`` (how it was trained). Describing a file
reads its header only, so needs no torch.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from ...errors import SettingsError
from ..safetensors_header import read_header

if TYPE_CHECKING:
    from .arch import SpanNet

#: The metadata key that marks a tilewave SPAN file.
KEY = "span"


def save_span(net: SpanNet, path: str, record: dict[str, Any]) -> None:
    """Write ``net`` to ``path`` (atomically: a crash leaves the old file or none)."""
    import os

    from safetensors.torch import save_file

    from ..conditions import CONDITIONS

    settings = {"scale": net.scale, "features": net.head.out_channels,
                "channels": net.mean.shape[1], "blocks": len(net.blocks),
                "img_range": float(net.img_range),
                "conditions": list(CONDITIONS[: net.conditions])}
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    tmp = path + ".tmp"
    save_file(state, tmp, metadata={KEY: json.dumps(settings), "record": json.dumps(record)})
    os.replace(tmp, path)


def is_span_file(path: str) -> bool:
    """True if ``path`` is a safetensors file of a SPAN network written by tilewave."""
    try:
        return KEY in (read_header(path).get("__metadata__") or {})
    except Exception:  # not a (readable) safetensors file: the general loader says why
        return False


def span_settings(path: str) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """The architecture's settings, parameter count and training record of a SPAN file."""
    try:
        header = read_header(path)
        meta = header.get("__metadata__") or {}
        settings = json.loads(meta[KEY])
        record = json.loads(meta.get("record") or "{}")
        parameters = sum(math.prod(t["shape"]) for k, t in header.items()
                         if k != "__metadata__" and k != "mean")
    except Exception as exc:
        raise SettingsError(f"weights {path!r} are not a SPAN file written by tilewave "
                            f"({type(exc).__name__}); give a model name or such a file") from None
    return settings, parameters, record


def load_span_file(path: str) -> SpanNet:
    """The network in a tilewave SPAN file."""
    from safetensors.torch import load_file

    from .arch import SpanNet

    settings, _, _ = span_settings(path)
    net = SpanNet(settings["scale"], features=settings["features"], channels=settings["channels"],
                  blocks=settings["blocks"], img_range=settings["img_range"],
                  conditions=len(settings.get("conditions", [])))
    net.load_state_dict(load_file(path))
    return net.eval()
