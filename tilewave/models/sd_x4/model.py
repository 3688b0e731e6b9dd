"""The upscaler as a :class:`~tilewave.models.base.TileModel` that runs one sampler step
of one tile per call (:class:`~tilewave.models.base.SteppedModel`).

A tile of core ``[y0, y1) x [x0, x1)`` samples the latents of its *region*, the core
grown by ``h`` (:data:`~tilewave.models.sd_x4.OVERLAP`) behind and ``2h`` ahead, clipped
to the image (:mod:`.sampler`). Its latents within ``h`` of its left and top borders
follow its neighbours' at every step; it decodes the whole region, so its core has a
margin on every side, and feathers the first ``h`` rows and columns of its core with what
its upper and left neighbours decoded there. It hands on the latents within ``h`` of its
right and bottom borders, step by step, and its decoded strips past them, which lie
``h`` inside its region so that its decoder saw both sides of them.

A step's context for a neighbour (None where it has nothing for it) is a dict::

    {"latents": {"window": (y0, y1, x0, x1), "states": [state k] (+ [final state])} | None,
     "pixels": decoded strip (numpy, last step only) | None}

Step ``k`` hands on the latents it started from after its own pulls; the last step also
the final latents, after the final pull, which needs the neighbours' final ones: they
send them at their last step, which comes before this tile's. ``forward_tile`` runs every
step in turn, its contexts per-step lists of these.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...pipeline.blend import blend_core, split_prediction
from ...pipeline.directions import Direction
from ...pipeline.grid import Tile
from ...pipeline.indices import Window
from ..base import ModelDescriptor, SamplerSettings, StepResult, TileRequest, TileResult, run_all_steps
from . import OVERLAP
from .folder import FolderFacts, Parts, load_parts
from .sampler import Conditioning, LoopState, Strip, decode, finish, initial_state, low_res_input, sample_step

#: The neighbours whose latents a tile takes over (the upper-left one's lie inside theirs).
_PULLED = (Direction.LEFT, Direction.TOP)


@dataclass(frozen=True)
class _Geometry:
    """Where a tile samples and what it hands on, from its request alone (so that every
    step finds the same)."""

    #: The latents the tile samples: its core grown by ``h`` behind and ``2h`` ahead.
    region: Window
    #: The latents it hands to its right and lower neighbours, by direction.
    outbound: dict[str, Window]

    @classmethod
    def of(cls, request: TileRequest) -> _Geometry:
        h = OVERLAP
        H, W = request.image_size
        cy0, cy1, cx0, cx1 = request.core
        wy0, wy1, wx0, wx1 = request.window
        ry0, ry1, rx0, rx1 = region = (max(wy0, cy0 - h), min(wy1, cy1 + 2 * h),
                                       max(wx0, cx0 - h), min(wx1, cx1 + 2 * h))
        outbound: dict[str, Window] = {}
        if cx1 < W:
            outbound[Direction.RIGHT] = (ry0, ry1, max(rx0, cx1 - h), min(rx1, cx1 + h))
        if cy1 < H:
            outbound[Direction.BELOW] = (max(ry0, cy1 - h), min(ry1, cy1 + h), rx0, rx1)
        return cls(region, outbound)


def _inbound(contexts: Mapping[str, Any], index: int) -> list[Strip]:
    """The left and upper neighbours' latent strips of one step's contexts: entry
    ``index`` of each one's states (0: the step's, 1: the final one, last step only)."""
    strips = []
    for d in _PULLED:
        latents = (contexts.get(d) or {}).get("latents")
        if latents is None:
            continue
        states = latents["states"]
        if index >= len(states):
            raise ValueError(f"the {d} neighbour's context of the last step holds no final latents")
        strips.append(Strip(tuple(latents["window"]), states[index]))
    return strips


def _sent(latents: Mapping[str, list[torch.Tensor]], outbound: Mapping[str, Window],
          pixels: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """One step's contexts, for every outbound direction (None where there is nothing
    for it), so that a tile's per-step lists line up with the steps. Plain containers:
    they are pickled to the job's context store."""
    sent: dict[str, Any] = {}
    for d in (Direction.RIGHT, Direction.BELOW, Direction.BELOW_RIGHT):
        strip = ({"window": outbound[d], "states": latents[d]} if d in outbound else None)
        pixels_d = pixels.get(d)
        sent[d] = None if strip is None and pixels_d is None else {
            "latents": strip, "pixels": None if pixels_d is None else np.ascontiguousarray(pixels_d)}
    return sent


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
        """Sample the tile's region (its read window), return its core's pixels: every
        step in turn, its inbound and outbound contexts per-step lists.

        Outside ``context`` mode ``request.core`` is the whole prediction the pipeline
        blends (a tile of final-only blending); there are no contexts to honour then.
        """
        return run_all_steps(self, x, request, self.sampler.steps)

    def forward_step(self, x: torch.Tensor, request: TileRequest, step: int,
                     state: Any) -> StepResult:
        """Run sampler step ``step`` of the tile, from ``state`` (what step ``step - 1``
        returned; None at step 0), with its neighbours' contexts of that step.

        ``x`` is the tile's whole input window, given again at every step. Returns the
        state for the next step (plain containers of CPU tensors) and this step's
        contexts; after the last one, the tile's output and steps run.
        """
        steps = self.sampler.steps
        if not 0 <= step < steps:
            raise ValueError(f"sd-x4 runs steps 0 to {steps - 1}, not step {step}")
        if (state is None) != (step == 0):
            raise ValueError(f"step {step} of sd-x4 needs the state of step {step - 1}"
                             if state is None else "step 0 of sd-x4 starts from no state")
        geometry = _Geometry.of(request)
        ry0, ry1, rx0, rx1 = region = geometry.region
        wy0, _, wx0, _ = request.window
        x = x[..., ry0 - wy0 : ry1 - wy0, rx0 - wx0 : rx1 - wx0]
        contexts = {k: v for k, v in request.contexts.items() if v is not None}
        parts, cond = self.parts, self.conditioning()
        with torch.inference_mode():
            loop = (initial_state(parts, region, cond, x.device) if state is None
                    else LoopState.from_plain(state, step, x.device))
            low_res = low_res_input(parts, x, region, cond)
            loop, kept = sample_step(parts, loop, low_res, region, step, cond,
                                     _inbound(contexts, 0), geometry.outbound)
            if step + 1 < steps:
                latents = {d: [t] for d, t in kept.items()}
                return StepResult(loop.plain(step + 1), _sent(latents, geometry.outbound, {}))
            z, final = finish(loop, region, _inbound(contexts, 1), geometry.outbound)
            pixels = decode(parts, z, ry1 - ry0, rx1 - rx0)[0].cpu().numpy()
        core, strips = self._blended(request, region, pixels, contexts)
        latents = {d: [kept[d], final[d]] for d in kept}
        return StepResult(None, _sent(latents, geometry.outbound, strips),
                          torch.from_numpy(np.ascontiguousarray(core))[None], (loop.steps_run, steps))

    def _blended(self, request: TileRequest, region: Window, pixels: np.ndarray,
                 contexts: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The core of the region's decoded ``pixels``, feathered with the strips its
        neighbours decoded, and its own strips for the neighbours past its core."""
        s, h = self.parts.scale, OVERLAP
        cy0, cy1, cx0, cx1 = request.core
        ry0, ry1, rx0, rx1 = region
        py1, px1 = min(cy1 + h, ry1), min(cx1 + h, rx1)
        prediction = pixels[:, (cy0 - ry0) * s : (py1 - ry0) * s, (cx0 - rx0) * s : (px1 - rx0) * s]
        core, strips = split_prediction(s, Tile(request.row, request.col, request.core,
                                                (cy0, py1, cx0, px1), region), prediction)
        received = {d: (contexts.get(d) or {}).get("pixels")
                    for d in (Direction.LEFT, Direction.TOP, Direction.TOP_LEFT)}
        if received[Direction.LEFT] is None or received[Direction.TOP] is None:
            received[Direction.TOP_LEFT] = None  # a corner blends only between two strips
        core = blend_core(core, {d: v for d, v in received.items() if v is not None}, "cosine")
        return core, strips
