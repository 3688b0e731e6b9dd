"""Inf-DiT as a tilewave :class:`~tilewave.models.base.SteppedModel`: one Heun step of
one tile per call, contexts handed on step by step.

A tile is whole blocks of ``block_px / scale`` input pixels (32 for the release). Its
input window reaches one block further on every side (the halo): the low-resolution
neighbourhood layer 0 cross-attends to, and the 2 pixels bicubic upsampling reads.
What lies past the image is what the whole-image run sees: the image padded to whole
blocks by repeating its edge (as tilewave pads any window), and beyond that, for the
cross-attention, zero tokens (as the release zero-pads its token map).

A step's context for a neighbour holds, for each of its (one or two) network
evaluations, per layer, the keys and values of the tile's border blocks; the state
between steps is the tile's current sample.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from ...errors import SettingsError
from ..base import ModelDescriptor, SamplerSettings, StepResult, TileRequest, TileResult, run_all_steps
from ..position_noise import position_noise
from . import clip, sampler
from .arch import InfDiTNet
from .checkpoint import missing_message


def _ceil(a: int, b: int) -> int:
    return -(-a // b) * b


@dataclasses.dataclass(frozen=True)
class _Geometry:
    """Where a tile's blocks lie, in input pixels."""

    y0: int
    y1: int  # the end of its whole blocks
    x0: int
    x1: int
    height: int  # the padded image's size: whole blocks
    width: int

    @classmethod
    def of(cls, request: TileRequest, block: int) -> _Geometry:
        y0, y1, x0, x1 = request.core
        h, w = request.image_size
        if y0 % block or x0 % block:
            raise ValueError(f"tile core {request.core} does not start on a {block}-pixel block")
        return cls(y0, y0 + _ceil(y1 - y0, block), x0, x0 + _ceil(x1 - x0, block),
                   _ceil(h, block), _ceil(w, block))


def _check_neighbours(request: TileRequest, inbound: dict[str, Any]) -> None:
    """Refuse a tile whose neighbour inside the image left no context: the network would
    take it for the image edge and compute something else."""
    y0, _, x0, _ = request.core
    expected = {"left": x0 > 0, "top": y0 > 0, "top_left": x0 > 0 and y0 > 0}
    missing = [d for d, inside in expected.items() if inside and d not in inbound]
    if missing:
        raise ValueError(f"Inf-DiT tile ({request.row}, {request.col}) has no context from its "
                         f"{' and '.join(missing)} neighbour(s), which lie inside the image")


class InfDiT:
    """Inf-DiT's network, its CLIP embedding and its sampler settings."""

    def __init__(self, net: InfDiTNet, descriptor: ModelDescriptor, folder: str,
                 tower: clip.VisionTower | None = None,
                 sampler_settings: SamplerSettings | None = None):
        self.net = net.eval().requires_grad_(False)
        self.descriptor = descriptor
        self.folder = folder
        self.tower = tower
        self.sampler = sampler_settings or descriptor.sampler or SamplerSettings(steps=sampler.STEPS)
        #: The job's CLIP embedding ``(1, vector_dim)``; None until given or computed.
        self.embedding: torch.Tensor | None = None
        self.dtype = torch.float32

    # --- settings ------------------------------------------------------------------------

    def with_sampler(self, settings: SamplerSettings) -> InfDiT:
        """The same network (shared, not copied) with other sampler settings."""
        other = copy.copy(self)
        other.sampler = settings
        return other

    def with_embedding(self, embedding: torch.Tensor | list[float]) -> InfDiT:
        """The same network conditioned on a given CLIP image embedding."""
        other = copy.copy(self)
        vector = torch.as_tensor(embedding, dtype=torch.float32).reshape(1, -1)
        if vector.shape[1] != self.net.cfg.vector_dim:
            raise SettingsError(f"an Inf-DiT image embedding has {self.net.cfg.vector_dim} values, "
                                f"not {vector.shape[1]}")
        other.embedding = vector
        return other

    def with_proxy(self, image: torch.Tensor) -> InfDiT:
        """The same network conditioned on the embedding of ``image``: the whole input,
        or a downscaled proxy of it, ``(1, 3, h, w)`` in unit space (computed now, once)."""
        if self.tower is None:
            raise SettingsError(missing_message(self.folder))
        return self.with_embedding(clip.embed(self.tower, clip.proxy(image, self.tower.image_size)))

    def with_condition(self, given: dict[str, Any]) -> InfDiT:
        """Conditioned on what the job hands over: ``image_embedding`` (the values) or
        ``overview`` (``(3, h, w)`` unit-space pixels of the whole input, downscaled:
        :mod:`tilewave.pipeline.overview`; ``clip_proxy`` is the same)."""
        if given.get("image_embedding") is not None:
            return self.with_embedding(given["image_embedding"])
        view = given.get("overview", given.get("clip_proxy"))
        if view is not None:
            return self.with_proxy(torch.as_tensor(view, dtype=torch.float32)[None])
        return self

    def to(self, device: torch.device, half: bool = False) -> InfDiT:
        """Move to ``device``; on a GPU in bfloat16 (as the release samples) if ``half``."""
        self.dtype = torch.bfloat16 if half and device.type == "cuda" else torch.float32
        self.net.to(device, self.dtype)
        if self.tower is not None:
            self.tower.to(device)
        return self

    # --- running -------------------------------------------------------------------------

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        """The whole window as one tile with no neighbours. Without an embedding given,
        the window itself is the image CLIP sees."""
        model = self
        if self.embedding is None:
            model = self.with_proxy(x[:, :3].float())
        h, w = x.shape[-2:]
        request = TileRequest(row=0, col=0, core=(0, h, 0, w), window=(0, h, 0, w),
                              image_size=(h, w), contexts={})
        return run_all_steps(model, x, request, self.sampler.steps).output

    def forward_tile(self, x: torch.Tensor, request: TileRequest) -> TileResult:
        """All of a tile's steps in turn (:func:`~tilewave.models.base.run_all_steps`)."""
        return run_all_steps(self, x, request, self.sampler.steps)

    def forward_step(self, x: torch.Tensor, request: TileRequest, step: int, state: Any) -> StepResult:
        """Step ``step`` of the tile ``request``: its sample moves from one noise level to
        the next; the step's contexts go to the right, lower and lower-right tiles."""
        if self.embedding is None:
            raise SettingsError(missing_message(self.folder) if self.tower is None else
                                "Inf-DiT needs the CLIP embedding of the whole input, computed once "
                                "per job: condition the model with with_proxy(image) or "
                                "with_condition({'clip_proxy': pixels})")
        cfg, net = self.net.cfg, self.net
        device = next(net.parameters()).device
        geo = _Geometry.of(request, cfg.input_block)
        levels = sampler.sigmas(self.sampler.steps, self.dtype).to(device)
        lr, concat, cross_valid = self._inputs(x.to(device, torch.float32), request, geo)
        s = cfg.scale
        if state is None:
            noise = position_noise(self.sampler.seed, 0, cfg.out_channels, geo.y0 * s, geo.y1 * s,
                                   geo.x0 * s, geo.x1 * s)
            sample = concat + torch.from_numpy(noise)[None].to(device, self.dtype) * levels[0]
        else:
            sample = state["x"].to(device, self.dtype)
        vector = self.embedding.to(device, self.dtype)
        cross = net.cross_keys_values(lr.to(self.dtype), cross_valid)
        origin = (geo.y0 * s // cfg.patch, geo.x0 * s // cfg.patch)
        inbound = {d: v for d, v in request.contexts.items() if v is not None}
        _check_neighbours(request, inbound)
        outbound: dict[str, list[Any]] = {}

        def denoise(z: torch.Tensor, sigma: torch.Tensor, evaluation: int) -> torch.Tensor:
            c_skip, c_out, c_in, c_noise = sampler.precondition(sigma)
            emb = net.embedding(c_noise, vector)
            contexts = {d: v[evaluation] for d, v in inbound.items()}
            f, kv = net.forward_blocks(torch.cat([z, concat], dim=1) * c_in, emb, cross, origin, contexts)
            for d, layers in kv.items():
                outbound.setdefault(d, []).append([(k.clone(), v.clone()) for k, v in layers])
            return f * c_out + z * c_skip

        with torch.inference_mode():
            sample = sampler.heun_step(sample, levels, step, denoise)
        contexts = {d: tuple(evals) for d, evals in outbound.items()}
        if step + 1 < self.sampler.steps:
            return StepResult(state={"x": sample}, contexts=contexts)
        y0, y1, x0, x1 = request.core
        out = ((sample.float() + 1) / 2).clamp(0, 1)[..., : (y1 - y0) * s, : (x1 - x0) * s]
        return StepResult(state=None, contexts=contexts, output=out,
                          steps=(self.sampler.steps, self.sampler.steps))

    def _inputs(self, x: torch.Tensor, request: TileRequest, geo: _Geometry
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[tuple[int, int], tuple[int, int]]]:
        """The tile's low-resolution neighbourhood in ``[-1, 1]`` (its blocks and one block
        around), their bicubic upsampling (clipped to ``[-1, 1]``, as the release does) and
        which of the neighbourhood's tokens lie inside the padded image."""
        cfg = self.net.cfg
        b, s, lp = cfg.input_block, cfg.scale, cfg.lr_patch
        wy0, wy1, wx0, wx1 = request.window
        h, w = request.image_size
        # The padded image repeats its edge: gather with clamped indices. Pixels past the
        # padded image are gathered too (to keep the shapes) but never used.
        rows = torch.arange(geo.y0 - b, geo.y1 + b).clamp(0, h - 1) - wy0
        cols = torch.arange(geo.x0 - b, geo.x1 + b).clamp(0, w - 1) - wx0
        if int(rows.min()) < 0 or int(rows.max()) >= wy1 - wy0 or int(cols.min()) < 0 \
                or int(cols.max()) >= wx1 - wx0:
            raise ValueError(f"tile window {request.window} does not hold one block around the core "
                             f"{request.core}; the model's halo is {b}")
        lr = x[:, :3, rows.to(x.device)][..., cols.to(x.device)] * 2 - 1
        # Upsample only what lies inside the padded image: at its edges the antialiased
        # kernel renormalises as on the whole image, elsewhere the block margin keeps the
        # window's own edges away from the tile.
        vy0, vy1 = max(geo.y0 - b, 0), min(geo.y1 + b, geo.height)
        vx0, vx1 = max(geo.x0 - b, 0), min(geo.x1 + b, geo.width)
        inside = lr[..., vy0 - (geo.y0 - b): vy1 - (geo.y0 - b), vx0 - (geo.x0 - b): vx1 - (geo.x0 - b)]
        up = F.interpolate(inside, scale_factor=s, mode="bicubic", antialias=True, align_corners=False)
        top, left = (geo.y0 - vy0) * s, (geo.x0 - vx0) * s
        concat = up[..., top: top + (geo.y1 - geo.y0) * s, left: left + (geo.x1 - geo.x0) * s]
        valid = (((vy0 - (geo.y0 - b)) // lp, (vy1 - (geo.y0 - b)) // lp),
                 ((vx0 - (geo.x0 - b)) // lp, (vx1 - (geo.x0 - b)) // lp))
        return lr, concat.clamp(-1, 1).to(self.dtype), valid
