"""The upscaler as a :class:`~tilewave.models.base.TileModel`.

A tile of core ``[y0, y1) x [x0, x1)`` samples the latents of its *region*, the core
grown by ``h`` (:data:`~tilewave.models.sd_x4.OVERLAP`) behind and ``2h`` ahead, clipped
to the image (:mod:`.sampler`). Its latents within ``h`` of its left and top borders
follow its neighbours' at every step; it decodes the whole region, so its core has a
margin on every side, and feathers the first ``h`` rows and columns of its core with what
its upper and left neighbours decoded there. It hands on the latents within ``h`` of its
right and bottom borders, step by step, and its decoded strips past them, which lie
``h`` inside its region so that its decoder saw both sides of them.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import numpy as np
import torch

from ...pipeline.blend import blend_core, split_prediction
from ...pipeline.directions import Direction
from ...pipeline.grid import Tile
from ..base import ModelDescriptor, SamplerSettings, TileRequest, TileResult
from . import OVERLAP
from .folder import FolderFacts, Parts, load_parts
from .sampler import Conditioning, LatentStrip, decode, sample_region


def _strip(value: dict[str, Any] | None) -> LatentStrip | None:
    if not value:
        return None
    return LatentStrip(tuple(value["window"]), list(value["states"]))


def _plain(strip: LatentStrip | None) -> dict[str, Any] | None:
    # Contexts are pickled to the job's context store: plain containers and tensors only.
    return None if strip is None else {"window": strip.window, "states": strip.states}


class SDX4:
    """The Stable Diffusion x4 upscaler of one folder, with its sampler settings."""

    def __init__(self, descriptor: ModelDescriptor, parts: Parts, sampler: SamplerSettings):
        self.descriptor = descriptor
        self.parts = parts
        self.sampler = sampler
        # Each settings object gets its own scheduler: set_timesteps changes it.
        parts.scheduler = type(parts.scheduler).from_config(parts.scheduler.config)
        parts.scheduler.set_timesteps(sampler.steps)
        self._conditioning: Conditioning | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, facts: FolderFacts, descriptor: ModelDescriptor) -> SDX4:
        assert descriptor.sampler is not None  # every sd-x4 descriptor has one
        return cls(descriptor, load_parts(facts), descriptor.sampler)

    def with_sampler(self, sampler: SamplerSettings) -> SDX4:
        """The same weights (shared, not copied) with other sampler settings."""
        return SDX4(self.descriptor, dataclasses.replace(self.parts), sampler)

    def to(self, device: torch.device, half: bool = False) -> SDX4:
        dtype = torch.float16 if half and device.type == "cuda" else torch.float32
        self.parts.unet.to(device, dtype)
        if self.parts.text_encoder is not None:
            self.parts.text_encoder.to(device, dtype)
        # The VAE overflows in half precision (diffusers upcasts it for the same reason).
        self.parts.vae.to(device, torch.float32)
        self._conditioning = None
        return self

    def conditioning(self) -> Conditioning:
        """Prompt embeddings and settings, computed once per loaded model (per worker)."""
        with self._lock:
            if self._conditioning is None:
                self._conditioning = self._condition()
            return self._conditioning

    def _condition(self) -> Conditioning:
        parts, s = self.parts, self.sampler
        device = parts.unet.device
        guidance = s.guidance or 0.0
        if parts.text_encoder is None:
            width = parts.unet.config.cross_attention_dim
            embeds = torch.zeros(1, 77, width, device=device, dtype=parts.dtype)
        else:
            def embed(text: str) -> torch.Tensor:
                tok = parts.tokenizer
                ids = tok(text, padding="max_length", max_length=tok.model_max_length,
                          truncation=True, return_tensors="pt").input_ids.to(device)
                return parts.text_encoder(ids)[0].to(parts.dtype)

            with torch.inference_mode():
                embeds = embed(s.prompt or "")
                if guidance > 1 and (s.prompt or "") != (s.negative_prompt or ""):
                    embeds = torch.cat([embed(s.negative_prompt or ""), embeds])
        return Conditioning(embeds, guidance, s.noise_level or 0, s.seed, s.early_stop or 0.0)

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        whole = (0, h, 0, w)
        return self.forward_tile(x, TileRequest(row=0, col=0, core=whole, window=whole,
                                                image_size=(h, w), contexts={})).output

    def forward_tile(self, x: torch.Tensor, request: TileRequest) -> TileResult:
        """Sample the tile's region (its read window), return its core's pixels.

        Outside ``context`` mode ``request.core`` is the whole prediction the pipeline
        blends (a tile of final-only blending); there are no contexts to honour then.
        """
        parts, s, h = self.parts, self.parts.scale, OVERLAP
        H, W = request.image_size
        cy0, cy1, cx0, cx1 = request.core
        wy0, wy1, wx0, wx1 = request.window
        region = (max(wy0, cy0 - h), min(wy1, cy1 + 2 * h), max(wx0, cx0 - h), min(wx1, cx1 + 2 * h))
        ry0, ry1, rx0, rx1 = region
        x = x[..., ry0 - wy0 : ry1 - wy0, rx0 - wx0 : rx1 - wx0]
        contexts = {Direction(k): v for k, v in request.contexts.items() if v is not None}
        inbound = [strip for d in (Direction.LEFT, Direction.TOP)
                   if (strip := _strip(contexts.get(d, {}).get("latents"))) is not None]
        outbound: dict[str, tuple[int, int, int, int]] = {}
        if cx1 < W:
            outbound[Direction.RIGHT] = (ry0, ry1, max(rx0, cx1 - h), min(rx1, cx1 + h))
        if cy1 < H:
            outbound[Direction.BELOW] = (max(ry0, cy1 - h), min(ry1, cy1 + h), rx0, rx1)
        with torch.inference_mode():
            sampled = sample_region(parts, x, region, self.sampler.steps, self.conditioning(),
                                    inbound, outbound)
            pixels = decode(parts, sampled.latents, ry1 - ry0, rx1 - rx0)[0].cpu().numpy()
        py1, px1 = min(cy1 + h, ry1), min(cx1 + h, rx1)
        prediction = pixels[:, (cy0 - ry0) * s : (py1 - ry0) * s, (cx0 - rx0) * s : (px1 - rx0) * s]
        core, strips = split_prediction(s, Tile(request.row, request.col, request.core,
                                                (cy0, py1, cx0, px1), region), prediction)
        received = {d: contexts.get(d, {}).get("pixels")
                    for d in (Direction.LEFT, Direction.TOP, Direction.TOP_LEFT)}
        if received[Direction.LEFT] is None or received[Direction.TOP] is None:
            received[Direction.TOP_LEFT] = None  # a corner blends only between two strips
        core = blend_core(core, {d: v for d, v in received.items() if v is not None}, "cosine")
        sent: dict[str, Any] = {}
        for d in (Direction.RIGHT, Direction.BELOW, Direction.BELOW_RIGHT):
            pixels_d = strips.get(d)
            sent[d] = {"latents": _plain(sampled.strips.get(d)),
                       "pixels": None if pixels_d is None else np.ascontiguousarray(pixels_d)}
        return TileResult(torch.from_numpy(np.ascontiguousarray(core))[None], sent,
                          (sampled.steps_run, self.sampler.steps))
