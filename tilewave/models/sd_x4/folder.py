"""The upscaler's folder on disk: checked from its JSON files alone (on the driver, which
imports neither torch nor diffusers), then loaded by the workers, offline.

A folder is what ``StableDiffusionUpscalePipeline.save_pretrained`` writes (and what a
download of ``stabilityai/stable-diffusion-x4-upscaler`` holds): ``model_index.json``
naming the pipeline, and one subfolder per component: ``unet``, ``vae``, ``scheduler``,
``low_res_scheduler`` and, optionally, ``text_encoder`` with ``tokenizer``. Nothing is
ever fetched: the hub is switched off before diffusers is imported, and every component
is read with ``local_files_only``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import SettingsError, first_line
from ...install import pip_hint

if TYPE_CHECKING:
    import torch

PIPELINE = "StableDiffusionUpscalePipeline"
#: Schedulers whose step needs no memory of earlier steps, so that a tile's latents can
#: be pulled to its neighbours' between steps; a DDPM folder samples as DDIM with
#: ``eta = 1`` (DDPM's posterior variance), its noise keyed by position.
SCHEDULERS = {"DDIMScheduler": 0.0, "DDPMScheduler": 1.0}
#: Weight files a diffusers component may have, preferred first; then half-precision variants.
_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
            "model.safetensors", "pytorch_model.bin")
_VARIANT = "fp16"
EXTRA = pip_hint("diffusion")


def _missing_extra() -> list[str]:
    return [m for m in ("diffusers", "transformers") if importlib.util.find_spec(m) is None]


def check_extra() -> None:
    """Refuse in one line when the ``diffusion`` extra is not installed."""
    missing = _missing_extra()
    if missing:
        raise SettingsError(f"the Stable Diffusion upscaler needs {' and '.join(missing)}, "
                            f"which {'is' if len(missing) == 1 else 'are'} not installed: {EXTRA}")


def import_libraries() -> tuple[types.ModuleType, types.ModuleType]:
    """diffusers and transformers, offline. A torchvision built for another torch (as pip
    may install beside a CPU torch) raises on import, and both import it when it is
    there: it is then hidden, as if absent (neither needs it here). Both decide whether
    it is there once, so this must come before their first use in the process."""
    check_extra()
    # Read when huggingface_hub is first imported; local_files_only holds anyway.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if "torchvision" not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except Exception:
            for name in [k for k in sys.modules if k.startswith("torchvision.")]:
                del sys.modules[name]
            sys.modules["torchvision"] = None  # type: ignore[assignment]  # find_spec: absent
    import diffusers
    import transformers

    # Workers' output reaches the user's terminal: no loading bars, no advice to install
    # optional accelerators; errors still raise.
    for library in (diffusers, transformers):
        library.utils.logging.disable_progress_bar()
        library.utils.logging.set_verbosity_error()
    return diffusers, transformers


def _json(path: str, folder: str, what: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise SettingsError(f"upscaler folder {folder!r} is incomplete: {what} "
                            f"({os.path.relpath(path, folder)}) is missing; copy the whole "
                            "folder again") from None
    except (OSError, ValueError) as exc:
        raise SettingsError(f"upscaler folder {folder!r}: {os.path.relpath(path, folder)} "
                            f"cannot be read ({first_line(exc, 120)}); copy it again") from None
    if not isinstance(value, dict):
        raise SettingsError(f"upscaler folder {folder!r}: {os.path.relpath(path, folder)} is "
                            "not a JSON object; copy it again")
    return value


def _weights(folder: str, component: str) -> tuple[str, str | None]:
    """The weights file of ``component`` and the variant it needs (None or ``fp16``)."""
    sub = os.path.join(folder, component)
    for name in _WEIGHTS:
        if os.path.isfile(os.path.join(sub, name)):
            return os.path.join(sub, name), None
        stem, ext = os.path.splitext(name)
        if os.path.isfile(os.path.join(sub, f"{stem}.{_VARIANT}{ext}")):
            return os.path.join(sub, f"{stem}.{_VARIANT}{ext}"), _VARIANT
    raise SettingsError(f"upscaler folder {folder!r} is incomplete: {component}/ has no "
                        f"weights ({_WEIGHTS[0]} or {_WEIGHTS[1]}); copy the whole folder again")


def _parameters(path: str) -> int:
    """Weights in a safetensors file, from its header (0 where that cannot be read)."""
    if not path.endswith(".safetensors"):
        return 0
    from ..safetensors_header import read_header

    try:
        header = read_header(path)
    except (OSError, ValueError):
        return 0
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


@dataclass(frozen=True)
class FolderFacts:
    """What the JSON files of an upscaler folder say, checked."""

    path: str
    scale: int
    latent_channels: int
    #: Latent sizes must be multiples of this (the UNet halves them this often, less one).
    latent_multiple: int
    max_noise_level: int
    scheduler: str
    has_text_encoder: bool
    #: Per component, the weights variant to load (``fp16`` where only half-precision
    #: files are there).
    variants: dict[str, str | None]
    parameters: int
    #: The most sampler steps the scheduler can take (its training timesteps, less its
    #: offset: more would step past the last one).
    steps_max: int

    @classmethod
    def read(cls, path: str) -> FolderFacts:
        """Check the folder ``path`` without importing anything heavy; one-line errors."""
        folder = os.path.abspath(path)
        if not os.path.isdir(folder):
            raise SettingsError(f"upscaler folder {path!r} does not exist; give the folder "
                                "that holds model_index.json")
        index = _json(os.path.join(folder, "model_index.json"), folder, "the pipeline index")
        kind = index.get("_class_name")
        if kind != PIPELINE:
            raise SettingsError(f"folder {path!r} holds a {kind or 'pipeline of no stated kind'}, "
                                f"not the Stable Diffusion x4 upscaler ({PIPELINE}); give that "
                                "pipeline's folder")
        unet = _json(os.path.join(folder, "unet", "config.json"), folder, "the UNet's config")
        vae = _json(os.path.join(folder, "vae", "config.json"), folder, "the VAE's config")
        scheduler = _json(os.path.join(folder, "scheduler", "scheduler_config.json"), folder,
                          "the scheduler's config")
        _json(os.path.join(folder, "low_res_scheduler", "scheduler_config.json"), folder,
              "the low-resolution scheduler's config")
        weights = {c: _weights(folder, c) for c in ("unet", "vae")}
        text = index.get("text_encoder")
        # The index names a text encoder (or null); a named one must be there.
        has_text = bool(text and text[0])
        if has_text:
            for part in ("text_encoder", "tokenizer"):
                if not os.path.isdir(os.path.join(folder, part)):
                    raise SettingsError(f"upscaler folder {path!r} is incomplete: its index "
                                        f"names a {part.replace('_', ' ')} but {part}/ is "
                                        "missing; copy the whole folder again")
            weights["text_encoder"] = _weights(folder, "text_encoder")
        parameters = sum(_parameters(w) for w, _ in weights.values())
        name = scheduler.get("_class_name", "")
        if name not in SCHEDULERS:
            raise SettingsError(f"upscaler folder {path!r} names the scheduler {name!r}; tilewave "
                                f"samples tiles with {' or '.join(SCHEDULERS)} only (their step "
                                "keeps no history, so tiles can share latents): set "
                                "scheduler/scheduler_config.json's _class_name to DDIMScheduler")
        latent = int(vae.get("latent_channels", 4))
        image = int(unet.get("in_channels", 0)) - latent
        if image != 3:
            raise SettingsError(f"upscaler folder {path!r}: its UNet takes {unet.get('in_channels')} "
                                f"channels, not {latent} latent + 3 image ones; this is not an "
                                "x4 upscaler's UNet")
        levels = len(unet.get("block_out_channels", (0,)))
        steps_max = int(scheduler.get("num_train_timesteps", 1000)) - int(scheduler.get("steps_offset", 0))
        return cls(folder, 2 ** (len(vae.get("block_out_channels", (0, 0, 0))) - 1), latent,
                   2 ** (levels - 1), int(index.get("max_noise_level", 350)), name, has_text,
                   {c: v for c, (_, v) in weights.items()}, parameters, steps_max)


@dataclass
class Parts:
    """The loaded components of an upscaler folder."""

    unet: Any
    vae: Any
    scheduler: Any
    low_res_scheduler: Any
    #: None where the folder has no text encoder (prompt embeddings are zeros then).
    text_encoder: Any
    tokenizer: Any
    #: DDIM's ``eta``: 0 for a DDIM folder, 1 for DDPM.
    eta: float
    facts: FolderFacts

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def scale(self) -> int:
        return self.facts.scale

    @property
    def latent_channels(self) -> int:
        return self.facts.latent_channels

    @property
    def latent_multiple(self) -> int:
        return self.facts.latent_multiple


def load_parts(facts: FolderFacts) -> Parts:
    """Load the folder's components on the CPU, offline."""
    diffusers, transformers = import_libraries()

    path, local, variant = facts.path, {"local_files_only": True}, facts.variants
    try:
        unet = diffusers.UNet2DConditionModel.from_pretrained(path, subfolder="unet",
                                                              variant=variant["unet"], **local)
        vae = diffusers.AutoencoderKL.from_pretrained(path, subfolder="vae",
                                                      variant=variant["vae"], **local)
        config = diffusers.DDIMScheduler.load_config(path, subfolder="scheduler", **local)
        scheduler = diffusers.DDIMScheduler.from_config(config)
        low_res = diffusers.DDPMScheduler.from_pretrained(path, subfolder="low_res_scheduler", **local)
        text_encoder = tokenizer = None
        if facts.has_text_encoder:
            with open(os.path.join(path, "model_index.json"), encoding="utf-8") as f:
                index = json.load(f)
            text_cls = getattr(transformers, index["text_encoder"][1])
            tok_cls = getattr(transformers, (index.get("tokenizer") or [None, "CLIPTokenizer"])[1])
            text_encoder = text_cls.from_pretrained(path, subfolder="text_encoder",
                                                    variant=variant["text_encoder"], **local)
            tokenizer = tok_cls.from_pretrained(path, subfolder="tokenizer", **local)
    except SettingsError:
        raise
    except Exception as exc:  # every loader raises its own kinds for damaged files
        raise SettingsError(f"upscaler folder {facts.path!r} cannot be loaded "
                            f"({first_line(exc, 160)}); copy the folder again") from None
    for module in (unet, vae, text_encoder):
        if module is not None:
            module.eval().requires_grad_(False)
    return Parts(unet, vae, scheduler, low_res, text_encoder, tokenizer, SCHEDULERS[facts.scheduler],
                 facts)
