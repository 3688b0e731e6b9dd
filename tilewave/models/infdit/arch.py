"""Inf-DiT's network, written for tilewave with the release's parameter names and shapes.

The module tree mirrors the SwissArmyTransformer model the checkpoint was saved from,
so ``load_state_dict(strict=True)`` takes the release as it is: ``transformer.*`` (the
layers' attention and MLP weights; every layer norm there is parameter-free),
``mixins.adaln_layer.*`` (adaptive-norm modulations, query/key norms, the rotary tables,
the per-neighbour key offsets and the first layer's cross-attention to the
low-resolution image), ``mixins.final_layer.*``, ``mixins.patch_embed.*``,
``time_embed.*`` and ``cond_embed.*``. The facts (arXiv 2405.04312 and THUDM/Inf-DiT's
``dit/model.py``):

- the input is the noisy image and the bicubic-upsampled input (both in ``[-1, 1]``),
  concatenated and scaled by EDM's ``c_in``, cut into 4 x 4 patches;
- tokens are grouped in blocks of 32 x 32 (128 pixels); in every layer a block's queries
  attend to the keys and values of itself, its top-left, left and top blocks, in that
  order, each group's keys offset by a learned vector (``re_pos_embed``). Past the image
  edge the neighbour index is clamped: a block in the top row sees itself as its top;
- queries and keys are layer-normed per head (the release applies the *query* norm to
  the keys as well; its key norms are saved but unused, and so they are here), then
  rotated by 2-D rotary angles of their global token position modulo 1024;
- layer 0 also cross-attends from each block to the low-resolution tokens (2 x 2 pixel
  patches) of its 3 x 3 block neighbourhood, zero past the image;
- adaptive layer norm without gates, from ``silu(time(c_noise) + map_vector(clip))``.

Computation is per block except attention, whose only inputs from other blocks are the
per-layer keys and values of the left, top and top-left neighbours: a tile of blocks
computes exactly what the whole image does, given those of its neighbouring tiles.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Direction
from .config import InfDiTConfig

#: Per layer, a tile's keys and values of its border blocks for one neighbour.
LayerKV = tuple[torch.Tensor, torch.Tensor]


def _layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """SAT's parameter-free layer norm (computed in float32 for half inputs, as on GPUs
    the fused kernel does)."""
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)


def rope_tables(cfg: InfDiTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotary tables ``(rows, cols, head_dim)`` as the release builds them: the first
    half of a head's channels turns with the row, the second with the column, each
    frequency shared by an adjacent channel pair; in float32, as saved."""
    dim = cfg.head_dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    n = cfg.rope_size
    t = torch.arange(n) / n * n
    angles = torch.einsum("i,f->if", t, freqs).repeat_interleave(2, dim=-1)  # (n, dim)
    full = torch.cat([angles[:, None, :].expand(n, n, dim), angles[None, :, :].expand(n, n, dim)], -1)
    return full.cos(), full.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` with pairs ``(a, b) -> (-b, a)``."""
    pairs = x.unflatten(-1, (-1, 2))
    turned = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * cos + turned * sin


class _Attention(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.query_key_value = nn.Linear(d, 3 * d)
        self.dense = nn.Linear(d, d)


class _MLP(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(d, 4 * d)
        self.dense_4h_to_h = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x), approximate="tanh"))


class _Layer(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.attention = _Attention(d)
        self.mlp = _MLP(d)


class _Transformer(nn.Module):
    def __init__(self, cfg: InfDiTConfig):
        super().__init__()
        # SAT's learned position table: saved, never read (positions are rotary).
        self.position_embeddings = nn.Embedding(cfg.max_sequence_length, cfg.hidden)
        self.layers = nn.ModuleList([_Layer(cfg.hidden) for _ in range(cfg.layers)])


class _CrossAttention(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.query = nn.Linear(d, d)
        self.key_value = nn.Linear(d, 2 * d)
        self.dense = nn.Linear(d, d)


class _Rope(nn.Module):
    def __init__(self, cfg: InfDiTConfig):
        super().__init__()
        cos, sin = rope_tables(cfg)
        self.register_buffer("freqs_cos", cos)
        self.register_buffer("freqs_sin", sin)


class _AdaLN(nn.Module):
    def __init__(self, cfg: InfDiTConfig):
        super().__init__()
        d, h, hd, n = cfg.hidden, cfg.heads, cfg.head_dim, cfg.layers
        self.q_layer_norm = nn.ModuleList([nn.LayerNorm(hd, eps=1e-6) for _ in range(n)])
        self.k_layer_norm = nn.ModuleList([nn.LayerNorm(hd, eps=1e-6) for _ in range(n)])
        self.adaLN_modulations = nn.ModuleList([nn.Sequential(nn.SiLU(), nn.Linear(d, 4 * d))
                                                for _ in range(n)])
        self.rope = _Rope(cfg)
        self.re_pos_embed = nn.Parameter(torch.zeros(n, 4, h, hd))
        self.proj_lr = nn.Conv2d(3, d, cfg.lr_patch, stride=cfg.lr_patch)
        self.cross_attention = _CrossAttention(d)
        self.post_cross_attention_layernorm = nn.LayerNorm(d, eps=1e-6)
        t, lrb = cfg.tokens_per_side, cfg.lr_block
        self.lr_query_position_embedding = nn.Parameter(torch.zeros(1, t * t, h, hd))
        self.lr_key_position_embedding = nn.Parameter(torch.zeros(1, (3 * lrb) ** 2, h, hd))
        self.cross_q_ln = nn.LayerNorm(hd, eps=1e-6)
        self.cross_k_ln = nn.LayerNorm(hd, eps=1e-6)


class _FinalLayer(nn.Module):
    def __init__(self, cfg: InfDiTConfig):
        super().__init__()
        self.linear = nn.Linear(cfg.hidden, cfg.patch ** 2 * cfg.out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cfg.hidden, 2 * cfg.hidden))


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: InfDiTConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_channels, cfg.hidden, cfg.patch, stride=cfg.patch)


class _TimeEmbed(nn.Module):
    def __init__(self, cfg: InfDiTConfig):
        super().__init__()
        self.channels = cfg.time_channels
        self.mlp = nn.Sequential(nn.Linear(cfg.time_channels, cfg.hidden), nn.SiLU(),
                                 nn.Linear(cfg.hidden, cfg.hidden))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        half = self.channels // 2
        freqs = (1 / 10000) ** (torch.arange(half, dtype=torch.float32, device=c_noise.device) / half)
        x = c_noise.reshape(-1).outer(freqs.to(c_noise.dtype))
        return self.mlp(torch.cat([x.cos(), x.sin()], dim=1))


class _CondEmbed(nn.Module):
    def __init__(self, cfg: InfDiTConfig):
        super().__init__()
        self.map_vector = nn.Sequential(nn.Linear(cfg.vector_dim, cfg.hidden), nn.SiLU(),
                                        nn.Linear(cfg.hidden, cfg.hidden))


def _blocks(t: torch.Tensor, side: int) -> torch.Tensor:
    """``(C, H, W)`` token map -> ``(nby, nbx, side * side, C)``, tokens row-major in a block."""
    c, h, w = t.shape
    t = t.reshape(c, h // side, side, w // side, side)
    return t.permute(1, 3, 2, 4, 0).reshape(h // side, w // side, side * side, c)


def _gather(own: torch.Tensor, left: torch.Tensor | None, top: torch.Tensor | None,
            corner: torch.Tensor | None) -> torch.Tensor:
    """Per block, the four key (or value) groups it attends to: itself, its top-left,
    left and top neighbours, ``(nby, nbx, 4 * T, heads, head_dim)``.

    ``own`` is ``(nby, nbx, T, heads, hd)``; ``left`` the left tile's right block column,
    ``top`` the upper tile's bottom row, ``corner`` the upper-left tile's last block, each
    None where that neighbour lies past the image edge, where the index is clamped: the
    missing row or column is the tile's own first one.
    """
    nby, nbx = own.shape[:2]
    ext = own.new_empty(nby + 1, nbx + 1, *own.shape[2:])
    ext[1:, 1:] = own
    ext[1:, 0] = left if left is not None else own[:, 0]
    ext[0, 1:] = top if top is not None else own[0, :]
    if corner is not None:
        ext[0, 0] = corner
    elif top is None:  # top image row: the top-left block is the left one (or itself)
        ext[0, 0] = ext[1, 0]
    elif left is None:  # left image column: the top-left block is the top one
        ext[0, 0] = ext[0, 1]
    else:
        raise ValueError("an upper-left neighbour's context is missing inside the image")
    groups = [ext[1:, 1:], ext[:-1, :-1], ext[1:, :-1], ext[:-1, 1:]]
    return torch.cat(groups, dim=2)


class InfDiTNet(nn.Module):
    """The denoiser ``D(x; sigma)`` over one tile of whole blocks, or a whole image."""

    def __init__(self, cfg: InfDiTConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = _Transformer(cfg)
        self.mixins = nn.ModuleDict({"adaln_layer": _AdaLN(cfg), "final_layer": _FinalLayer(cfg),
                                     "patch_embed": _PatchEmbed(cfg)})
        self.time_embed = _TimeEmbed(cfg)
        self.cond_embed = _CondEmbed(cfg)

    @property
    def adaln(self) -> _AdaLN:
        return cast(_AdaLN, self.mixins["adaln_layer"])

    def cross_keys_values(self, lr: torch.Tensor,
                          valid: tuple[tuple[int, int], tuple[int, int]]) -> LayerKV:
        """Keys and values of each block's 3 x 3 low-resolution neighbourhood.

        ``lr`` is ``(1, 3, h + 2b, w + 2b)`` in ``[-1, 1]``: the tile's blocks with one
        block (``b`` input pixels) around them. ``valid`` is ``((r0, r1), (c0, c1))``, the
        token rows and columns of it that lie inside the (padded) image; the others are
        zero, as the release zero-pads the token map. Returns ``(nby * nbx, (3 lrb)^2,
        heads, hd)`` keys and values: the same at every evaluation, so computed once a step.
        """
        a, cfg = self.adaln, self.cfg
        tokens = a.proj_lr(lr)[0]  # (d, th, tw)
        mask = torch.zeros(tokens.shape[1:], dtype=torch.bool, device=tokens.device)
        (r0, r1), (c0, c1) = valid
        mask[r0:r1, c0:c1] = True
        tokens = tokens * mask.to(tokens.dtype)
        lrb = cfg.lr_block
        windows = tokens.unfold(1, 3 * lrb, lrb).unfold(2, 3 * lrb, lrb)  # (d, nby, nbx, 3lrb, 3lrb)
        nby, nbx = windows.shape[1:3]
        windows = windows.permute(1, 2, 3, 4, 0).reshape(nby * nbx, (3 * lrb) ** 2, cfg.hidden)
        k, v = a.cross_attention.key_value(windows).chunk(2, dim=-1)
        k = a.cross_k_ln(k.unflatten(-1, (cfg.heads, cfg.head_dim))) + a.lr_key_position_embedding[0]
        return k, v.unflatten(-1, (cfg.heads, cfg.head_dim))

    def embedding(self, c_noise: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        """``silu(time(c_noise) + map_vector(clip))``: what every modulation reads."""
        return F.silu(self.time_embed(c_noise) + self.cond_embed.map_vector(vector))

    def forward_blocks(self, x: torch.Tensor, emb: torch.Tensor, cross: LayerKV,
                       origin: tuple[int, int], contexts: dict[str, Any]
                       ) -> tuple[torch.Tensor, dict[str, list[LayerKV]]]:
        """The network on a tile: ``x`` ``(1, in_channels, H, W)`` (already scaled by
        ``c_in``; whole blocks), ``origin`` its top-left token in global coordinates.
        Returns ``F(x)`` ``(1, out_channels, H, W)`` and, per direction, per layer, the keys
        and values the right, lower and lower-right neighbours need."""
        cfg, a = self.cfg, self.adaln
        n, hd, heads = cfg.tokens_per_side, cfg.head_dim, cfg.heads
        tokens = _blocks(cast(_PatchEmbed, self.mixins["patch_embed"]).proj(x)[0], n)  # (nby, nbx, T, d)
        nby, nbx = tokens.shape[:2]
        cos, sin = self._rotary(origin, nby * n, nbx * n, tokens.dtype)
        left, top, corner = (contexts.get(k) for k in (Direction.LEFT, Direction.TOP, Direction.TOP_LEFT))
        out: dict[str, list[LayerKV]] = {Direction.RIGHT: [], Direction.BELOW: [], Direction.BELOW_RIGHT: []}
        h = tokens
        for i, layer in enumerate(cast("list[_Layer]", list(self.transformer.layers))):
            shift_msa, scale_msa, shift_mlp, scale_mlp = a.adaLN_modulations[i](emb).chunk(4, dim=-1)
            inp = _layer_norm(h, cfg.eps) * (1 + scale_msa) + shift_msa
            q, k, v = layer.attention.query_key_value(inp).unflatten(-1, (3, heads, hd)).unbind(-3)
            norm = a.q_layer_norm[i]  # the release normalises keys with the query norm too
            q, k = _rotate(norm(q), cos, sin), _rotate(norm(k), cos, sin)
            out[Direction.RIGHT].append((k[:, -1], v[:, -1]))
            out[Direction.BELOW].append((k[-1], v[-1]))
            out[Direction.BELOW_RIGHT].append((k[-1, -1], v[-1, -1]))

            def side(ctx: Any, j: int, i: int = i) -> torch.Tensor | None:
                return None if ctx is None else ctx[i][j]

            k_all = _gather(k, side(left, 0), side(top, 0), side(corner, 0))
            v_all = _gather(v, side(left, 1), side(top, 1), side(corner, 1))
            k_all = k_all + a.re_pos_embed[i].repeat_interleave(n * n, dim=0)
            h = h + layer.attention.dense(self._attend(q, k_all, v_all))
            if i == 0:
                h = h + self._cross(h, cross)
                mlp_in = a.post_cross_attention_layernorm(h)
            else:
                mlp_in = _layer_norm(h, cfg.eps)
            h = h + layer.mlp(mlp_in * (1 + scale_mlp) + shift_mlp)
        return self._final(h, emb), out

    def _rotary(self, origin: tuple[int, int], rows: int, cols: int, dtype: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per token of the tile's blocks, the rotary table's row at its global position
        (modulo the wrap the release samples with), ``(nby, nbx, T, 1, head_dim)``."""
        cfg, rope = self.cfg, self.adaln.rope
        cos_table, sin_table = cast(torch.Tensor, rope.freqs_cos), cast(torch.Tensor, rope.freqs_sin)
        device = cos_table.device
        ys = (torch.arange(rows, device=device) + origin[0]) % cfg.rope_wrap
        xs = (torch.arange(cols, device=device) + origin[1]) % cfg.rope_wrap
        n = cfg.tokens_per_side

        def table(t: torch.Tensor) -> torch.Tensor:
            grid = t[ys[:, None], xs[None, :]]  # (rows, cols, hd)
            return _blocks(grid.permute(2, 0, 1), n)[:, :, :, None, :].to(dtype)

        return table(cos_table), table(sin_table)

    @staticmethod
    def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Block attention: ``(nby, nbx, T, heads, hd)`` queries over ``(.., 4T, ..)``."""
        nby, nbx, t, heads, hd = q.shape
        qb, kb, vb = (z.flatten(0, 1).transpose(1, 2) for z in (q, k, v))  # (blocks, heads, L, hd)
        o = F.scaled_dot_product_attention(qb, kb, vb)
        return o.transpose(1, 2).reshape(nby, nbx, t, heads * hd)

    def _cross(self, h: torch.Tensor, cross: LayerKV) -> torch.Tensor:
        cfg, a = self.cfg, self.adaln
        nby, nbx, t, d = h.shape
        q = a.cross_attention.query(_layer_norm(h, cfg.eps)).unflatten(-1, (cfg.heads, cfg.head_dim))
        q = (a.cross_q_ln(q) + a.lr_query_position_embedding[0]).flatten(0, 1)  # (blocks, T, heads, hd)
        k, v = cross
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return a.cross_attention.dense(o.transpose(1, 2).reshape(nby, nbx, t, d))

    def _final(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        final = cast(_FinalLayer, self.mixins["final_layer"])
        h = _layer_norm(_layer_norm(h, cfg.eps), 1e-6)  # SAT's final norm, then the layer's own
        shift, scale = final.adaLN_modulation(emb).chunk(2, dim=-1)
        y = final.linear(h * (1 + scale) + shift)  # (nby, nbx, T, p * p * c)
        nby, nbx = y.shape[:2]
        n, p, c = cfg.tokens_per_side, cfg.patch, cfg.out_channels
        y = y.reshape(nby, nbx, n, n, p, p, c)  # block row/col, token row/col, pixel row/col
        return y.permute(6, 0, 2, 4, 1, 3, 5).reshape(1, c, nby * n * p, nbx * n * p)
