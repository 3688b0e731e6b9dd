"""The UniBA transformer: super-resolution with Unidirectional Block Attention.

The low-resolution image is cut into ``block`` x ``block`` pixel blocks, each a
``(block / patch)^2`` grid of tokens. At every layer a block's tokens attend to their
own block and to the keys and values of the blocks to their left, top and top-left, and
to nothing else, so blocks can be computed top-left to bottom-right and a block's
per-layer keys and values are all its right, lower and lower-right neighbours ever need
from it (after Inf-DiT, Yang et al. 2024, arXiv 2405.04312). The first layer also
cross-attends to the low-resolution tokens of the surrounding 3 x 3 blocks (read as a
halo), which keeps neighbouring blocks consistent. Positions are 2-D rotary encodings in
global image coordinates, so a tile computes the same thing wherever it is cut from.

A convolutional stem (unpadded, so it is exact inside the halo) extracts per-pixel
features; the transformer adds context across blocks; a per-pixel head reads both and
predicts the residual over bicubic upscaling. The head's last layer starts at zero, so an
untrained model is exactly bicubic.

Edge rule: a neighbour block outside the image does not exist, and its keys are masked
out of attention (the block attends only to the neighbours it has). Pixels needed past
the image edge (the last partial blocks, the halo) replicate the edge pixel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Direction, count_parameters
from ..bicubic import bicubic_upscale
from .config import UniBAConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_angles(ys: torch.Tensor, xs: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Rotation angles for token positions: half the pairs rotate with y, half with x.

    Computed in float64, since global positions of a gigapixel image are large.
    """
    pairs = head_dim // 2
    n = pairs // 2
    freqs = 1.0 / (100.0 ** (torch.arange(n, dtype=torch.float64) / n))
    ay = ys.double()[..., None] * freqs
    ax = xs.double()[..., None] * freqs
    return torch.cat([ay, ax], dim=-1)  # (..., pairs)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of ``x`` (..., tokens, head_dim) by ``angles`` (tokens, pairs)."""
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2)


def _blocks(t: torch.Tensor, side: int) -> torch.Tensor:
    """(N, C, H, W) token map -> (N, nby, nbx, side*side, C) blocks of tokens."""
    n, c, h, w = t.shape
    t = t.reshape(n, c, h // side, side, w // side, side)
    return t.permute(0, 2, 4, 3, 5, 1).reshape(n, h // side, w // side, side * side, c)


def _unblocks(t: torch.Tensor, side: int) -> torch.Tensor:
    """Inverse of :func:`_blocks`."""
    n, nby, nbx, _, c = t.shape
    t = t.reshape(n, nby, nbx, side, side, c).permute(0, 5, 1, 3, 2, 4)
    return t.reshape(n, c, nby * side, nbx * side)


def _modulate(x: torch.Tensor, mod: torch.Tensor | None, row: int) -> torch.Tensor:
    """Adaptive norm: ``x * (1 + scale) + shift`` with ``mod[row]`` the shift and
    ``mod[row + 1]`` the scale, or ``x`` itself when there is no modulation."""
    if mod is None:
        return x
    return x * (1 + mod[row + 1]) + mod[row]


class Layer(nn.Module):
    def __init__(self, cfg: UniBAConfig, cross: bool):
        super().__init__()
        d, h = cfg.dim, cfg.heads
        self.heads, self.head_dim = h, d // h
        self.norm1 = RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)
        self.proj = nn.Linear(d, d)
        self.cross = cross
        if cross:
            self.norm_c = RMSNorm(d)
            self.cq = nn.Linear(d, d)
            self.ckv = nn.Linear(d, 2 * d)
            self.cq_norm = RMSNorm(self.head_dim)
            self.ck_norm = RMSNorm(self.head_dim)
            self.cproj = nn.Linear(d, d)
        self.norm2 = RMSNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(), nn.Linear(cfg.mlp_ratio * d, d))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        # (..., T, d) -> (..., heads, T, head_dim)
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(-2, -3)

    def keys_values(self, x: torch.Tensor, angles: torch.Tensor,
                    mod: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Queries, keys and values of (nby, nbx, T, d) block tokens."""
        q, k, v = self.qkv(_modulate(self.norm1(x), mod, 0)).chunk(3, dim=-1)
        q = apply_rope(self.q_norm(self._split(q)), angles)
        k = apply_rope(self.k_norm(self._split(k)), angles)
        return q, k, self._split(v)

    def attend(self, x: torch.Tensor, q: torch.Tensor, k_all: torch.Tensor, v_all: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
        n, nby, nbx, t, d = x.shape
        out = F.scaled_dot_product_attention(
            q.flatten(0, 2), k_all.flatten(0, 2), v_all.flatten(0, 2),
            attn_mask=mask.expand(n, *mask.shape).flatten(0, 2),
        )
        out = out.transpose(-2, -3).reshape(n, nby, nbx, t, d)
        return x + self.proj(out)

    def cross_keys_values(self, lr: torch.Tensor, kv_angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the low-resolution neighbourhood tokens (the same at every
        sampler step, so a multi-step model computes them once per tile)."""
        k, v = self.ckv(lr).chunk(2, dim=-1)
        return apply_rope(self.ck_norm(self._split(k)), kv_angles), self._split(v)

    def cross_attend(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor],
                     q_angles: torch.Tensor) -> torch.Tensor:
        n, nby, nbx, t, d = x.shape
        q = apply_rope(self.cq_norm(self._split(self.cq(self.norm_c(x)))), q_angles)
        k, v = kv
        out = F.scaled_dot_product_attention(q.flatten(0, 2), k.flatten(0, 2), v.flatten(0, 2))
        return x + self.cproj(out.transpose(-2, -3).reshape(n, nby, nbx, t, d))

    def feed_forward(self, x: torch.Tensor, mod: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.mlp(_modulate(self.norm2(x), mod, 2))


@dataclass
class Encoded:
    """A tile's low-resolution encoding, computed once and reused by every step."""

    pixel: torch.Tensor  # (N, stem, h, w) stem features of the tile's own pixels
    tokens: torch.Tensor  # (N, nby, nbx, T, d) block tokens
    angles: torch.Tensor  # rotary angles of the block tokens
    lr_tokens: torch.Tensor  # (N, nby, nbx, 9T, d) each block's 3 x 3 neighbourhood
    lr_angles: torch.Tensor
    base: torch.Tensor  # (N, C, h*s, w*s) bicubic upscaling of the tile
    #: The cross-attention's keys and values of ``lr_tokens``, once computed.
    cross_kv: tuple[torch.Tensor, torch.Tensor] | None = None


class UniBANet(nn.Module):
    """The network. :meth:`forward_tile` runs one tile of whole blocks; a whole image is
    one tile with no neighbours."""

    def __init__(self, cfg: UniBAConfig):
        super().__init__()
        self.cfg = cfg
        c, s, p = cfg.channels, cfg.stem, cfg.patch
        # Unpadded convolutions: a feature never depends on where the window was cut.
        stem: list[nn.Module] = [nn.Conv2d(c + len(cfg.conditions), s, 3)]
        for _ in range(cfg.stem_layers - 1):
            stem += [nn.GELU(), nn.Conv2d(s, s, 3)]
        self.stem = nn.Sequential(*stem)
        for conv in self.stem:
            if isinstance(conv, nn.Conv2d):
                # Keeps activations at unit scale through the stem, so the zero-started
                # head gets features it can use from the first steps.
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                assert conv.bias is not None  # made with a bias
                nn.init.zeros_(conv.bias)
        self.embed = nn.Conv2d(s, cfg.dim, p, stride=p)
        self.lr_embed = nn.Conv2d(s, cfg.dim, p, stride=p)
        self.layers = nn.ModuleList([Layer(cfg, cross=(i == 0)) for i in range(cfg.layers)])
        self.norm_out = RMSNorm(cfg.dim)
        # Per low-resolution pixel: its stem features and its token's features in, the
        # scale x scale output pixels' residuals out.
        self.head = nn.Sequential(nn.Conv2d(s + cfg.dim, cfg.dim, 1), nn.GELU(),
                                  nn.Conv2d(cfg.dim, c * cfg.scale**2, 1))
        head_out = cast(nn.Conv2d, self.head[-1])
        nn.init.zeros_(head_out.weight)
        assert head_out.bias is not None  # made with a bias
        nn.init.zeros_(head_out.bias)

    def forward_tile(
        self,
        window: torch.Tensor,
        origin: tuple[int, int],
        contexts: dict[str, Any] | None = None,
        condition: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Upscale the blocks of one tile.

        ``window`` is ``(N, C, H + 2m, W + 2m)``: the tile's ``H`` x ``W`` pixels (whole
        blocks) with a halo of ``m = cfg.halo`` pixels on every side, edges already
        replicated.
        ``origin`` is the tile's top-left pixel in global image coordinates. ``contexts``
        maps ``left``/``top``/``top_left`` to what those neighbours emitted (absent or
        None outside the image). ``condition`` ``(N, conditions)`` holds a conditioned
        network's constant channels (zeros if None). Returns the ``(N, C, H*s, W*s)``
        output and the contexts for ``right``, ``below`` and ``below_right``.
        """
        enc = self.encode(window, origin, condition)
        x, out_ctx = self.transform(enc, enc.tokens, contexts or {})
        return enc.base + self.residual(enc, x), out_ctx

    def encode(self, window: torch.Tensor, origin: tuple[int, int],
               condition: torch.Tensor | None = None) -> Encoded:
        """What a tile computes once from its low-resolution window, whatever follows."""
        cfg = self.cfg
        b, p, n = cfg.block, cfg.patch, cfg.tokens_per_side
        m = cfg.halo
        nw, _, hh, ww = window.shape
        h, w = hh - 2 * m, ww - 2 * m
        nby, nbx = h // b, w // b
        # Centred and scaled pixels (unit-space images sit mostly in 0.2-0.7).
        stem_in = (window - 0.45) * 4.0
        if cfg.conditions:
            if condition is None:
                condition = window.new_zeros(nw, len(cfg.conditions))
            maps = condition.to(window.dtype).view(nw, -1, 1, 1).expand(-1, -1, hh, ww)
            stem_in = torch.cat([stem_in, maps * 4.0], dim=1)
        feats = self.stem(stem_in)  # (N, stem, h + 2b, w + 2b): margin consumed
        pixel = feats[..., b : b + h, b : b + w]
        tokens = _blocks(self.embed(pixel), n)  # (N, nby, nbx, T, d)
        lr = self.lr_embed(feats)  # (N, d, (h + 2b)/p, (w + 2b)/p)

        # Global token positions of every block, and of each block's 3 x 3 neighbourhood.
        ty0, tx0 = origin[0] // p, origin[1] // p
        gy = torch.arange(h // p) + ty0
        gx = torch.arange(w // p) + tx0
        pos_y = _blocks(gy[None, None, :, None].expand(1, 1, h // p, w // p).double(), n)[0, ..., 0]
        pos_x = _blocks(gx[None, None, None, :].expand(1, 1, h // p, w // p).double(), n)[0, ..., 0]
        angles = rope_angles(pos_y, pos_x, cast(Layer, self.layers[0]).head_dim)[:, :, None]  # (nby,nbx,1,T,pairs)
        lr_tokens, lr_angles = self._neighbourhoods(lr, ty0 - n, tx0 - n, nby, nbx)
        s = cfg.scale
        core = window[..., m - 2 : m + h + 2, m - 2 : m + w + 2]  # bicubic needs 2 pixels
        base = bicubic_upscale(core, s)[..., 2 * s : (2 + h) * s, 2 * s : (2 + w) * s]
        return Encoded(pixel, tokens, angles, lr_tokens, lr_angles, base)

    def with_conditions(self, conditions: tuple[str, ...]) -> UniBANet:
        """This network taking ``conditions`` as more stem input channels, their weights
        at zero: it computes exactly what it did until training moves them."""
        from dataclasses import replace

        if conditions == self.cfg.conditions:
            return self
        grown = type(self)(replace(self.cfg, conditions=conditions))
        state = self.state_dict()
        first = torch.zeros_like(cast(nn.Conv2d, grown.stem[0]).weight)
        first[:, : self.cfg.channels + len(self.cfg.conditions)] = state["stem.0.weight"]
        state["stem.0.weight"] = first
        grown.load_state_dict(state)
        return grown.train(self.training)

    def transform(self, enc: Encoded, x: torch.Tensor, contexts: dict[str, Any],
                  modulation: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """The UniBA layers over block tokens ``x``, given the neighbours' per-layer keys
        and values; returns the tokens and this tile's own per-layer keys and values for
        its right, lower and lower-right neighbours. ``modulation`` holds, per layer, a
        ``(4, d)`` shift/scale pair for each of the two norms (adaptive norm)."""
        ctx_left, ctx_top, ctx_corner = (contexts.get(k) for k in (Direction.LEFT, Direction.TOP, Direction.TOP_LEFT))
        out_ctx: dict[str, Any] = {Direction.RIGHT: [], Direction.BELOW: [], Direction.BELOW_RIGHT: []}
        for i, layer in enumerate(cast("Iterable[Layer]", self.layers)):
            mod = modulation[i] if modulation is not None else None
            if layer.cross:
                if enc.cross_kv is None:
                    enc.cross_kv = layer.cross_keys_values(enc.lr_tokens, enc.lr_angles)
                x = layer.cross_attend(x, enc.cross_kv, enc.angles)
            q, k, v = layer.keys_values(x, enc.angles, mod)  # (N, nby, nbx, heads, T, head_dim)
            out_ctx[Direction.RIGHT].append((k[:, :, -1], v[:, :, -1]))
            out_ctx[Direction.BELOW].append((k[:, -1, :], v[:, -1, :]))
            out_ctx[Direction.BELOW_RIGHT].append((k[:, -1, -1], v[:, -1, -1]))
            k_all, v_all, mask = self._gather(
                k, v,
                ctx_left[i] if ctx_left is not None else None,
                ctx_top[i] if ctx_top is not None else None,
                ctx_corner[i] if ctx_corner is not None else None,
            )
            x = layer.attend(x, q, k_all, v_all, mask)
            x = layer.feed_forward(x, mod)
        return x, out_ctx

    def residual(self, enc: Encoded, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Per low-resolution pixel, the ``scale x scale`` output pixels' residual over
        bicubic, from its stem features and its token's features (plus ``extra``, added
        before the head's non-linearity)."""
        p, s = self.cfg.patch, self.cfg.scale
        context = _unblocks(self.norm_out(x), self.cfg.tokens_per_side)  # (N, d, h/p, w/p)
        context = context.repeat_interleave(p, dim=-2).repeat_interleave(p, dim=-1)
        hidden = self.head[0](torch.cat([enc.pixel, context], dim=1))
        if extra is not None:
            hidden = hidden + extra
        return F.pixel_shuffle(self.head[2](self.head[1](hidden)), s)

    def _neighbourhoods(self, lr: torch.Tensor, ty0: int, tx0: int, nby: int, nbx: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """LR tokens of each block's 3 x 3 block neighbourhood: (N, nby, nbx, 9T, d), with angles."""
        n = self.cfg.tokens_per_side
        batch, d, th, tw = lr.shape
        # Unfold windows of 3n x 3n tokens with stride n.
        patches = lr.unfold(2, 3 * n, n).unfold(3, 3 * n, n)  # (N, d, nby, nbx, 3n, 3n)
        tokens = patches.permute(0, 2, 3, 4, 5, 1).reshape(batch, nby, nbx, 9 * n * n, d)
        iy = torch.arange(nby)[:, None, None, None] * n + torch.arange(3 * n)[None, None, :, None] + ty0
        ix = torch.arange(nbx)[None, :, None, None] * n + torch.arange(3 * n)[None, None, None, :] + tx0
        iy = iy.expand(nby, nbx, 3 * n, 3 * n).reshape(nby, nbx, -1)
        ix = ix.expand(nby, nbx, 3 * n, 3 * n).reshape(nby, nbx, -1)
        angles = rope_angles(iy, ix, cast(Layer, self.layers[0]).head_dim)[:, :, None]
        return tokens, angles

    @staticmethod
    def _gather(k: torch.Tensor, v: torch.Tensor, left: Any, top: Any, corner: Any
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys/values each block attends to (self, left, top, top-left) and the mask of
        the ones that exist."""
        batch, nby, nbx, heads, t, hd = k.shape

        def extend(a: torch.Tensor, which: int) -> tuple[torch.Tensor, torch.Tensor]:
            grid = a.new_zeros(batch, nby + 1, nbx + 1, heads, t, hd)
            have = torch.zeros(nby + 1, nbx + 1, dtype=torch.bool)
            grid[:, 1:, 1:] = a
            have[1:, 1:] = True
            if left is not None:
                grid[:, 1:, 0] = left[which]
                have[1:, 0] = True
            if top is not None:
                grid[:, 0, 1:] = top[which]
                have[0, 1:] = True
            if corner is not None:
                grid[:, 0, 0] = corner[which]
                have[0, 0] = True
            return grid, have

        gk, have = extend(k, 0)
        gv, _ = extend(v, 1)
        sel = [(slice(1, None), slice(1, None)), (slice(1, None), slice(0, -1)),
               (slice(0, -1), slice(1, None)), (slice(0, -1), slice(0, -1))]
        k_all = torch.cat([gk[:, a, b] for a, b in sel], dim=-2)  # (N, nby, nbx, heads, 4t, hd)
        v_all = torch.cat([gv[:, a, b] for a, b in sel], dim=-2)
        exists = torch.stack([have[a, b] for a, b in sel], dim=-1)  # (nby, nbx, 4)
        mask = exists.repeat_interleave(t, dim=-1)[:, :, None, None, :]  # (nby,nbx,1,1,4t)
        return k_all, v_all, mask.expand(nby, nbx, 1, t, 4 * t)


def context_bytes(ctx: Any) -> int:
    """Bytes of the tensors in one tile's outgoing contexts (any nesting of dicts,
    lists and tuples: per direction, per step, per layer)."""
    if isinstance(ctx, torch.Tensor):
        return ctx.numel() * ctx.element_size()
    if isinstance(ctx, dict):
        return sum(context_bytes(v) for v in ctx.values())
    if isinstance(ctx, (list, tuple)):
        return sum(context_bytes(v) for v in ctx)
    return 0


__all__ = ["UniBAConfig", "UniBANet", "context_bytes", "count_parameters"]
