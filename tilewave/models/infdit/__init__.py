"""``--model PATH`` of an Inf-DiT checkpoint folder: the released x4 diffusion transformer
with Unidirectional Block Attention (Yang et al., ECCV 2024, arXiv 2405.04312), run in
``context`` mode, one Heun step of one tile at a time.

The folder is SwissArmyTransformer's (:mod:`.checkpoint`), checked on the driver from
its files and its tensors' names and shapes, without loading weights or importing torch
for the network; the workers load it with plain torch. The network (:mod:`.arch`) has
the release's parameter names, the sampler (:mod:`.sampler`) its schedule and steps,
the CLIP conditioning (:mod:`.clip`) its image tower.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import SettingsError
from ..base import ModelDescriptor, SamplerSettings, SizeRequirements
from ..entry import ModelEntry
from .checkpoint import CheckpointFacts, find_clip_file, is_infdit_folder, missing_message
from .config import InfDiTConfig

if TYPE_CHECKING:
    from .model import InfDiT

__all__ = ["NAME", "SAMPLER_DEFAULTS", "describe", "entries", "folder_entry", "is_infdit_folder",
           "listing", "load"]

NAME = "inf-dit"
#: The release's sampler: 20 Heun steps; its only noise is the start's, keyed by --seed.
SAMPLER_DEFAULTS = SamplerSettings(steps=20, noise=None, seed=0)


def describe(cfg: InfDiTConfig, weights: str, parameters: int = 0) -> ModelDescriptor:
    """The descriptor of an Inf-DiT network with configuration ``cfg``."""
    b = cfg.input_block
    # One block's keys and values for one evaluation, all layers, float32 (bfloat16 on a
    # GPU takes half): a step has at most 2 evaluations; a tile of side S hands on its
    # right column and bottom row (S / b blocks each) and one corner block.
    per_block = cfg.layers * 2 * cfg.tokens_per_side ** 2 * cfg.hidden * 4
    kv = (f"keys and values ({cfg.tokens_per_side ** 2} tokens x {cfg.heads} heads x "
          f"{cfg.head_dim}, the model's dtype) of the tile's right block column, bottom block "
          "row and bottom-right block")
    return ModelDescriptor(
        name=NAME,
        scale=cfg.scale,
        modes=("context",),
        halo=b,
        channels=(3,),
        supports_half=True,
        size=SizeRequirements(multiple_of=b),
        block=b,
        context_format=f"per sampler step, per network evaluation (2, 1 for the last step), per layer, {kv}",
        weights=weights,
        description=(f"Inf-DiT x{cfg.scale} from a SwissArmyTransformer checkpoint: diffusion "
                     f"transformer with block attention over {cfg.block_px}-pixel output blocks, "
                     "Heun sampler (--steps, default 20), start noise keyed by position and --seed"),
        parameters=parameters,
        sampler=SAMPLER_DEFAULTS,
        min_tile=b,
        positional=True,
        trained_for="photos (a diffusion model: detail is generated, conditioned on a CLIP "
                    "embedding of the whole input)",
        stepwise=True,
        step_context_bytes=(2 * 2 * per_block // b, 2 * per_block),
        # Twice CLIP's 224 pixels, so that its antialiased resize still does the filtering.
        overview=448,
    )


def _clip_available(facts: CheckpointFacts) -> bool:
    return facts.has_clip or find_clip_file(facts.folder) is not None


def load(facts: CheckpointFacts, descriptor: ModelDescriptor) -> InfDiT:
    """Build the network and its CLIP tower from the checked folder ``facts`` (CPU)."""
    import torch

    from . import clip
    from .arch import InfDiTNet
    from .checkpoint import CLIP_PREFIX, load_state
    from .model import InfDiT

    state = load_state(facts.folder, facts.states)
    network = {k: v for k, v in state.items() if not k.startswith(CLIP_PREFIX)}
    with torch.device("meta"):
        net = InfDiTNet(facts.config)
    try:
        net.load_state_dict(network, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise SettingsError(f"Inf-DiT checkpoint {facts.folder!r} does not fit its configuration "
                            f"({(first[1] if len(first) > 1 else first[0]).strip()[:160]})") from None
    # Assigned tensors are the file's (memory-mapped, maybe bfloat16): compute in float32.
    net = net.float()
    tower = None
    if facts.has_clip:
        tower = clip.VisionTower.from_state(clip.visual_state(state, CLIP_PREFIX)).float()
    elif (path := find_clip_file(facts.folder)) is not None:
        tower = clip.load_clip_file(path).float()
    return InfDiT(net, descriptor, facts.folder, tower)


def folder_entry(path: str) -> ModelEntry:
    """A registry entry for the Inf-DiT checkpoint folder ``path``, checked now (its
    files, configuration and tensor layout; no weights read). Refused in one line when
    no CLIP image tower is there to compute the image embedding with."""
    facts = CheckpointFacts.read(path)
    if not _clip_available(facts):
        raise SettingsError(missing_message(facts.folder))
    desc = describe(facts.config, facts.folder, facts.parameters)

    def build(scale: int) -> InfDiT:
        if scale != facts.config.scale:
            raise SettingsError(f"Inf-DiT checkpoint {facts.folder!r} upscales x{facts.config.scale}, "
                                f"not x{scale}")
        return load(facts, desc)

    return ModelEntry(facts.folder, build, scales=(facts.config.scale,),
                      default_scale=facts.config.scale, summary="Inf-DiT checkpoint folder",
                      describe=lambda scale: desc)



def _by_name(scale: int) -> ModelDescriptor:
    raise SettingsError("inf-dit runs from its checkpoint folder on this machine: give "
                        "--model /path/to/inf-dit (the folder with `latest` or "
                        "mp_rank_00_model_states.pt, and its CLIP image tower; see docs/infdit.md)")


def listing() -> ModelDescriptor:
    """The generic descriptor ``tilewave models`` shows for ``inf-dit``: the release's."""
    return describe(InfDiTConfig(), "a local checkpoint folder: --model PATH")


def entries() -> list[ModelEntry]:
    return [ModelEntry(NAME, _by_name, scales=(4,), default_scale=4,  # type: ignore[arg-type]
                       summary="Inf-DiT: --model PATH of its SwissArmyTransformer checkpoint folder",
                       describe=_by_name, folder=True, listing=listing)]
