"""The CLIP image embedding Inf-DiT is conditioned on: OpenCLIP's ViT-L/14 image tower
(the release trains with ``ViT-L-14``, ``datacomp_xl_s13b_b90k``), written anew in its
state-dict layout so that no ``open_clip`` is needed.

One embedding per image: the whole input, its short side resized to 224 pixels (bicubic,
antialiased) and centre-cropped to 224 x 224, normalised with CLIP's mean and deviation,
through the tower; the class token's projection, L2-normalised. tilewave computes it
once per job from a downscaled proxy of the input, never per tile, so tiles agree.

The tower's weights come from the checkpoint itself when it was saved with them
(``image_encoder.model.visual.*``), else from an OpenCLIP weights file placed in the
checkpoint folder's ``clip/`` subfolder (``open_clip_model.safetensors`` or
``open_clip_pytorch_model.bin``, as OpenCLIP publishes them). Its size is read from the
shapes (heads are 64 channels wide, as in every OpenCLIP ViT).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import SettingsError, first_line

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_WIDTH = 64


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, width // HEAD_WIDTH, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=nn.GELU(),
                                             c_proj=nn.Linear(4 * width, width)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class _Blocks(nn.Module):
    def __init__(self, width: int, layers: int):
        super().__init__()
        self.resblocks = nn.ModuleList([_Block(width) for _ in range(layers)])


class VisionTower(nn.Module):
    """OpenCLIP's ``VisionTransformer`` (class-token pooling, no layer scale)."""

    def __init__(self, width: int, layers: int, patch: int, grid: int, out: int):
        super().__init__()
        self.image_size = patch * grid
        self.conv1 = nn.Conv2d(3, width, patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = _Blocks(width, layers)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, out))

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> VisionTower:
        """The tower whose weights (keys without the ``visual.`` prefix) are ``state``."""
        width, _, patch, _ = state["conv1.weight"].shape
        layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("transformer.resblocks."))
        grid = math.isqrt(state["positional_embedding"].shape[0] - 1)
        tower = cls(width, layers, patch, grid, state["proj"].shape[1])
        tower.load_state_dict(state, strict=True)
        return tower.eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` normalised pixels -> ``(N, out)`` L2-normalised embeddings."""
        x = self.conv1(pixels).flatten(2).transpose(1, 2)
        cls_token = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls_token, x], dim=1) + self.positional_embedding.to(x.dtype))
        for block in self.transformer.resblocks:
            x = block(x)
        return F.normalize(self.ln_post(x[:, 0]) @ self.proj, dim=-1)


def visual_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The image tower's tensors of ``state`` (keys under ``prefix + 'visual.'``)."""
    lead = prefix + "visual."
    return {k[len(lead):]: v for k, v in state.items() if k.startswith(lead)}


def load_clip_file(path: str) -> VisionTower:
    """The image tower of the OpenCLIP weights file ``path``."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state: Any = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        visual = visual_state({k.removeprefix("module."): v for k, v in state.items()}, "")
        return VisionTower.from_state(visual)
    except Exception as exc:  # a damaged or foreign file: say which, in one line
        raise SettingsError(f"CLIP weights {path!r} are not OpenCLIP ViT weights "
                            f"({first_line(exc, 120)}); copy them again") from None


def proxy(image: torch.Tensor, size: int = 224) -> torch.Tensor:
    """``(1, 3, H, W)`` unit-space pixels -> the ``(1, 3, size, size)`` view CLIP sees:
    the short side resized to ``size`` (bicubic, antialiased; the long side truncated as
    torchvision's ``Resize`` does), centre-cropped; not clamped, as the release's isn't."""
    h, w = image.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    other = int(size * long / short)
    shape = (size, other) if h <= w else (other, size)
    resized = F.interpolate(image.float(), size=shape, mode="bicubic", antialias=True, align_corners=False)
    top = int(round((shape[0] - size) / 2.0))
    left = int(round((shape[1] - size) / 2.0))
    return resized[..., top:top + size, left:left + size]


def embed(tower: VisionTower, view: torch.Tensor) -> torch.Tensor:
    """The ``(1, out)`` embedding of a :func:`proxy` view (normalised once more, as the
    release does after OpenCLIP's own normalisation)."""
    param = next(tower.parameters())
    mean = torch.tensor(MEAN, device=param.device, dtype=param.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=param.device, dtype=param.dtype).view(1, 3, 1, 1)
    if view.shape[-1] != tower.image_size:
        view = proxy(view, tower.image_size)
    with torch.inference_mode():
        pixels = (view.to(param.device, param.dtype) - mean) / std
        return F.normalize(tower(pixels).float(), dim=-1)
