"""``sd-x4``: the Stable Diffusion x4 upscaler, run from the user's local diffusers folder.

``--model PATH`` names the folder (``StableDiffusionUpscalePipeline.save_pretrained``'s,
or a copy of ``stabilityai/stable-diffusion-x4-upscaler``); it needs the ``diffusion``
extra (diffusers and transformers). tilewave does not call the pipeline: it runs its own
sampling loop per tile (:mod:`.sampler`) so that

- every noise field is keyed by position and seed, so a tile's output does not depend
  on the tiling order, the worker or a retry;
- in ``context`` mode (the default) a tile's latents where it overlaps its left and
  upper neighbours are set to theirs at every step, from per-step strips the raster DAG
  carries, so tiles continue one trajectory: one pass, no ghosts; the model runs one
  step of one tile per call (``stepwise``), so ``--schedule step`` can interleave the
  tiles' steps with one step's contexts in flight and each tile's small sampler state
  kept between its steps;
- ``blend`` mode is the usual recipe, for comparison: each tile samples alone and the
  decoded overlaps are feathered.

The folder is checked from its JSON files on the driver (:mod:`.folder`); the workers
load it offline, with the prompt embedded once per worker.
"""

from __future__ import annotations

from ...errors import SettingsError
from ..base import ModelDescriptor, SamplerSettings
from ..entry import ModelEntry
from .folder import EXTRA, FolderFacts, check_extra

__all__ = ["HALO", "OVERLAP", "describe", "entries", "folder_entry", "listing"]

#: Latent (= input) pixels on each side of a border that two neighbouring tiles share:
#: the later tile's latents there are its neighbour's, step by step, and the first
#: ``OVERLAP`` output rows and columns of its core are feathered with its neighbour's.
OVERLAP = 16
#: How far a tile's region reaches past its core: ``OVERLAP`` behind (the shared latents
#: of the earlier neighbours' cores), ``2 * OVERLAP`` ahead, so that the strip it decodes
#: for a later neighbour to feather with lies ``OVERLAP`` away from its region's edge.
HALO = 2 * OVERLAP
#: Sampler defaults: 25 DDIM steps (the pipeline's own default is 75), noise level 20
#: and guidance 9 as in the pipeline, seed 0, no early stop.
STEPS = 25
NOISE_LEVEL = 20
GUIDANCE = 9.0


def describe(facts: FolderFacts | None = None) -> ModelDescriptor:
    """The descriptor of the upscaler in ``facts``' folder (None: a generic one, listing)."""
    text = facts is None or facts.has_text_encoder
    # One step's latent strips, float32: to the right and below, each 2 * OVERLAP across
    # and as long as the region (the tile and 3 * OVERLAP). The last step's final latents
    # and decoded strips, once per tile, are left out of this per-step figure.
    strip = 4 * (facts.latent_channels if facts else 4) * 2 * OVERLAP
    sampler = SamplerSettings(steps=STEPS, noise=None, seed=0, noise_level=NOISE_LEVEL,
                              early_stop=0.0, prompt="" if text else None,
                              negative_prompt="" if text else None,
                              guidance=GUIDANCE if text else None)
    return ModelDescriptor(
        name="sd-x4",
        scale=facts.scale if facts else 4,
        modes=("context", "blend"),
        halo=HALO,
        channels=(3,),
        supports_half=True,
        context_format=(f"one context per sampler step: the latents within {OVERLAP} pixels of "
                        f"the border that step started from (4 x rows x {2 * OVERLAP}, float32); "
                        f"the last step's also the final latents, and the decoded pixels of the "
                        f"neighbour's first {OVERLAP} input rows or columns"),
        weights=facts.path if facts else "a local diffusers folder: --model PATH",
        description=("Stable Diffusion x4 upscaler from a local diffusers folder; latents "
                     "shared with the neighbours at every step" +
                     ("" if text else "; no text encoder, so no prompt")),
        parameters=facts.parameters if facts else 0,
        sampler=sampler,
        noise_level_max=facts.max_noise_level if facts else 350,
        steps_max=facts.steps_max if facts else 0,
        min_tile=OVERLAP,
        positional=True,
        tolerates_missing_contexts=True,
        stepwise=True,
        step_context_bytes=(2 * strip, 2 * strip * 3 * OVERLAP),
        trained_for="photos, guided by a prompt (a diffusion model: detail is generated)",
    )


def folder_entry(path: str) -> ModelEntry:
    """A registry entry for the upscaler folder ``path``, checked now (JSON files only)."""
    facts = FolderFacts.read(path)
    check_extra()
    desc = describe(facts)

    def load(scale: int) -> object:
        from .model import SDX4

        return SDX4.load(facts, desc)

    return ModelEntry(facts.path, load, scales=(facts.scale,), default_scale=facts.scale,  # type: ignore[arg-type]
                      summary="Stable Diffusion x4 upscaler folder", describe=lambda scale: desc,
                      requires="diffusers", extra="diffusion")


def _by_name(scale: int) -> ModelDescriptor:
    raise SettingsError("sd-x4 runs from the upscaler's diffusers folder on this machine: give "
                        "--model /path/to/stable-diffusion-x4-upscaler (the folder with "
                        f"model_index.json); it needs {EXTRA}")


def entries() -> list[ModelEntry]:
    return [ModelEntry("sd-x4", _by_name, scales=(4,), default_scale=4,  # type: ignore[arg-type]
                       summary="Stable Diffusion x4 upscaler: --model PATH of its diffusers folder",
                       describe=_by_name, requires="diffusers", extra="diffusion", folder=True,
                       listing=listing)]


def listing() -> ModelDescriptor:
    """The generic descriptor ``tilewave models`` shows for ``sd-x4``."""
    return describe(None)
