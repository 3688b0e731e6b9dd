"""The SR3 noise-prediction UNet, with the parameter names and shapes of SR3 checkpoints.

The layout is that of the SR3 implementation in
``Janspiry/Image-Super-Resolution-via-Iterative-Refinement`` (``model/sr3_modules/unet.py``),
which ``peterwilli/Diff2X`` trains: module names (``noise_level_mlp``, ``downs``, ``mid``,
``ups``, ``final_conv``) and the index of every layer inside its ``Sequential`` are part
of the checkpoint's key names, so they are kept here exactly; the code is tilewave's own.

Structure, for ``channel_mults`` of length ``n``:

- ``noise_level_mlp``: a sinusoidal encoding of the noise level (index 0, no weights),
  then Linear(C, 4C), Swish, Linear(4C, C) at indices 1-3;
- ``downs``: a 3x3 input conv, then per level ``res_blocks`` residual blocks (with
  self-attention at the levels whose resolution is in ``attn_res``) and, except after
  the last level, a stride-2 3x3 conv;
- ``mid``: a residual block with attention, then one without;
- ``ups``: per level (deepest first) ``res_blocks + 1`` residual blocks fed the skip
  features concatenated, and, except after the shallowest, nearest x2 and a 3x3 conv;
- ``final_conv``: GroupNorm, Swish, (Dropout or Identity), 3x3 conv.

Resolutions for ``attn_res`` are counted from ``image_size`` (the training tile), so
which levels attend is fixed by the configuration, whatever the size of the window run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SR3Config:
    """An SR3 network and its noise schedule; the defaults are Diff2X's."""

    in_channel: int = 6
    out_channel: int = 3
    inner_channel: int = 128
    norm_groups: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 2)
    attn_res: tuple[int, ...] = (16,)
    res_blocks: int = 4
    dropout: float = 0.2
    image_size: int = 64
    #: The upscaling factor: the condition is the input upsampled (bicubic) by this much.
    scale: int = 2
    #: The sampling schedule (Diff2X's ``beta_schedule.val``): linear betas.
    n_timestep: int = 10
    linear_start: float = 1e-6
    linear_end: float = 1e-2
    schedule: str = "linear"

    @property
    def levels(self) -> int:
        return len(self.channel_mults)

    def attends(self, level: int) -> bool:
        """Whether the blocks of ``level`` (0: full resolution) have self-attention."""
        return (self.image_size >> level) in self.attn_res


class _Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class _NoiseLevelEncoding(nn.Module):
    """Sinusoidal features of the noise level (``sqrt(alpha_bar)``), no weights."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(1e4) * torch.arange(half, dtype=level.dtype,
                                                        device=level.device) / half)
        angles = level.reshape(-1, 1) * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class _Block(nn.Module):
    """GroupNorm, Swish, Dropout (Identity at 0), 3x3 conv: ``block.0`` .. ``block.3``."""

    def __init__(self, dim: int, dim_out: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.block = nn.Sequential(nn.GroupNorm(groups, dim), _Swish(),
                                   nn.Dropout(dropout) if dropout else nn.Identity(),
                                   nn.Conv2d(dim, dim_out, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _NoiseShift(nn.Module):
    """Adds a per-channel shift computed from the noise embedding (``noise_func.0``)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.noise_func = nn.Sequential(nn.Linear(dim_in, dim_out))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return x + self.noise_func(emb).view(x.shape[0], -1, 1, 1)


class _ResBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.noise_func = _NoiseShift(emb_dim, dim_out)
        self.block1 = _Block(dim, dim_out, groups)
        self.block2 = _Block(dim_out, dim_out, groups, dropout)
        self.res_conv: nn.Module = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.block2(self.noise_func(self.block1(x), emb)) + self.res_conv(x)


class _SelfAttention(nn.Module):
    """Single-head attention over all positions of the feature map."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=-1)
        out = torch.einsum("bij,bcj->bci", weights, v).reshape(b, c, h, w)
        return x + self.out(out)


class _ResAttn(nn.Module):
    """A residual block, then attention if ``attend`` (``res_block``, ``attn``)."""

    def __init__(self, dim: int, dim_out: int, emb_dim: int, groups: int, dropout: float,
                 attend: bool):
        super().__init__()
        self.res_block = _ResBlock(dim, dim_out, emb_dim, groups, dropout)
        self.attn = _SelfAttention(dim_out, groups) if attend else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res_block(x, emb)
        return self.attn(x) if self.attn is not None else x


class _Down(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Up(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SR3UNet(nn.Module):
    """Predicts the noise in ``x`` (condition and noisy image, concatenated on channels)
    at noise level ``level`` (``sqrt(alpha_bar)``, one value per batch item)."""

    def __init__(self, cfg: SR3Config):
        super().__init__()
        self.cfg = cfg
        c, groups, drop = cfg.inner_channel, cfg.norm_groups, cfg.dropout
        self.noise_level_mlp = nn.Sequential(_NoiseLevelEncoding(c), nn.Linear(c, 4 * c),
                                             _Swish(), nn.Linear(4 * c, c))
        downs: list[nn.Module] = [nn.Conv2d(cfg.in_channel, c, 3, padding=1)]
        skips = [c]
        now = c
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.res_blocks):
                downs.append(_ResAttn(now, c * mult, c, groups, drop, cfg.attends(level)))
                now = c * mult
                skips.append(now)
            if level < cfg.levels - 1:
                downs.append(_Down(now))
                skips.append(now)
        self.downs = nn.ModuleList(downs)
        self.mid = nn.ModuleList([_ResAttn(now, now, c, groups, drop, True),
                                  _ResAttn(now, now, c, groups, drop, False)])
        ups: list[nn.Module] = []
        for level in reversed(range(cfg.levels)):
            for _ in range(cfg.res_blocks + 1):
                ups.append(_ResAttn(now + skips.pop(), c * cfg.channel_mults[level], c,
                                    groups, drop, cfg.attends(level)))
                now = c * cfg.channel_mults[level]
            if level > 0:
                ups.append(_Up(now))
        self.ups = nn.ModuleList(ups)
        self.final_conv = _Block(now, cfg.out_channel, groups)

    @property
    def multiple(self) -> int:
        """Window sides (in network pixels) must be multiples of this."""
        return 2 ** (self.cfg.levels - 1)

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        emb = self.noise_level_mlp(level)
        feats = []
        for layer in self.downs:
            x = layer(x, emb) if isinstance(layer, _ResAttn) else layer(x)
            feats.append(x)
        for layer in self.mid:
            x = layer(x, emb)
        for layer in self.ups:
            x = layer(torch.cat((x, feats.pop()), dim=1), emb) if isinstance(layer, _ResAttn) \
                else layer(x)
        return self.final_conv(x)
