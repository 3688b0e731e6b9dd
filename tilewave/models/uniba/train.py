"""Training a UniBA model on a user's own high-resolution images.

Random crops of the images are the targets; their low-resolution inputs are made by
antialiased bicubic downscaling. Each step places its crops at a random global position,
so the rotary encoding learns positions anywhere in a gigapixel image. The loss is L1.
Checkpoints are safetensors files with the configuration and training record in their
metadata; ``tilewave upscale --model PATH.safetensors`` runs them.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import SettingsError
from ...storage.inputs import open_input
from ...training.crops import CropSource, augment, pick
from ...training.finetune import lr_factor
from ...training.threads import torch_threads
from .arch import UniBAConfig, UniBANet, count_parameters
from .bridge import NOISE_MAX, UniBADiffNet


def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downscaling, the degradation the model learns to invert."""
    return F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=True,
                         align_corners=False).clamp(0, 1)


@dataclass
class TrainSettings:
    scale: int = 2
    crop: int = 64  # low-resolution pixels of the crop's core (whole blocks)
    batch: int = 8
    lr: float = 1.5e-3
    steps: int | None = None
    minutes: float | None = None
    seed: int = 0
    threads: int | None = None
    checkpoint_every: int = 200
    config: dict[str, Any] = field(default_factory=dict)
    #: Weights file to start from (fine-tuning); its configuration wins over ``config``.
    init: str | None = None
    #: Train the multi-step bridge model (``uniba-diff``); without ``init`` it starts
    #: from the shipped one-step weights, its added layers at zero.
    diffusion: bool = False


def save_checkpoint(net: UniBANet, path: str, record: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tmp = path + ".tmp"
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    save_file(state, tmp, metadata={"config": json.dumps(net.cfg.as_dict()),
                                    "record": json.dumps(record)})
    os.replace(tmp, path)


def _initial_network(settings: TrainSettings) -> tuple[UniBANet, str | None]:
    """The network training starts from: new, or the ``init`` weights (for a bridge
    model, the shipped one-step weights by default), with any layers the weights lack
    at zero; and the weights file it started from."""
    from safetensors.torch import load_file

    from . import _read_header, weights_path

    init = settings.init or (weights_path(settings.scale) if settings.diffusion else None)
    if init is None:
        return UniBANet(UniBAConfig(scale=settings.scale, **settings.config)), None
    cfg = _read_header(init)[0]
    if cfg.scale != settings.scale:
        raise SettingsError(f"--init weights are x{cfg.scale}, not x{settings.scale}; match --scale")
    if settings.diffusion and not cfg.diffusion:
        net: UniBANet = UniBADiffNet(replace(cfg, diffusion=True))
        missing, unexpected = net.load_state_dict(load_file(init), strict=False)
        if unexpected or any(not k.startswith(UniBADiffNet.ADDED) for k in missing):
            raise SettingsError(f"--init {init!r} does not match the bridge model's layers")
        return net, init
    if cfg.diffusion and not settings.diffusion:
        raise SettingsError(f"--init {init!r} is a multi-step model; add --diffusion")
    net = UniBADiffNet(cfg) if cfg.diffusion else UniBANet(cfg)
    net.load_state_dict(load_file(init))
    return net, init


def _bridge_loss(net: UniBADiffNet, lr_img: torch.Tensor, target: torch.Tensor,
                 origin: tuple[int, int], rng: random.Random) -> torch.Tensor:
    """L1 loss of the residual ``HR - bicubic`` predicted from a point of the bridge.

    A time ``t`` and a noise level are drawn (``t = 0``, the first sampler step, a
    quarter of the time, since it carries most of the result), the state is built from
    the true image, ``x_t = bicubic + t (HR - bicubic) + sigma sqrt(t (1 - t)) eps``, and
    the network learns to predict the residual from it: where the state's fine detail is
    real and where it is noise is what it learns to tell apart.
    """
    t = 0.0 if rng.random() < 0.25 else rng.random()
    sigma = 0.0 if rng.random() < 0.25 else rng.uniform(0.0, NOISE_MAX)
    enc = net.encode(lr_img, origin)
    residual = target - enc.base
    state = t * residual + sigma * math.sqrt(t * (1.0 - t)) * torch.randn_like(residual)
    predicted, _ = net.predict(enc, state, t, sigma, {})
    return (predicted - residual).abs().mean()


def train(images: Sequence[str], output: str, settings: TrainSettings,
          progress: bool = True) -> dict[str, Any]:
    """Train a UniBA model on ``images`` and write its weights to ``output``."""
    if not images:
        raise SettingsError("give at least one training image")
    if settings.steps is None and settings.minutes is None:
        raise SettingsError("give --steps or --minutes (or both) to bound the training")
    net, init = _initial_network(settings)
    cfg = net.cfg
    if settings.crop % cfg.block:
        raise SettingsError(f"--crop must be a multiple of the block size {cfg.block}")
    with torch_threads(settings.threads):
        return _train(images, output, settings, progress, net, init)


def _train(images: Sequence[str], output: str, settings: TrainSettings, progress: bool,
           net: UniBANet, init: str | None) -> dict[str, Any]:
    from tqdm.auto import tqdm

    cfg = net.cfg
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    sources = [CropSource(open_input(p)) for p in images]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=0.0)
    m, s = cfg.halo, cfg.scale
    hr_size = (settings.crop + 2 * m) * s
    record: dict[str, Any] = {
        "images": [os.path.basename(p) for p in images], "config": cfg.as_dict(),
        "parameters": count_parameters(net), "crop": settings.crop, "batch": settings.batch,
        "lr": settings.lr, "seed": settings.seed, "device": str(device),
        "threads": torch.get_num_threads(),
        **({"init": os.path.basename(init)} if init else {}),
        **({"objective": "L1 on HR - bicubic from true bridge states", "noise_max": NOISE_MAX}
           if cfg.diffusion else {}),
    }
    start = time.monotonic()
    budget_s = settings.minutes * 60 if settings.minutes else None
    step, loss_avg = 0, None
    total = settings.steps or 10**9
    bar = tqdm(total=settings.steps, unit="step", desc="train", disable=not progress)
    while True:
        elapsed = time.monotonic() - start
        fraction = max(step / total, elapsed / budget_s if budget_s else 0.0)
        if fraction >= 1.0:
            break
        for group in opt.param_groups:
            group["lr"] = settings.lr * lr_factor(fraction)
        crops = [augment(pick(sources, rng).crop(hr_size, rng), rng) for _ in range(settings.batch)]
        hr = torch.from_numpy(np.stack(crops)).to(device)
        lr_img = downscale(hr, s)
        origin = (rng.randrange(0, 1 << 16) * cfg.patch, rng.randrange(0, 1 << 16) * cfg.patch)
        target = hr[..., m * s : (m + settings.crop) * s, m * s : (m + settings.crop) * s]
        if isinstance(net, UniBADiffNet):
            loss = _bridge_loss(net, lr_img, target, origin, rng)
        else:
            loss = (net.forward_tile(lr_img, origin)[0] - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_avg:.4f}", refresh=False)
        if step % settings.checkpoint_every == 0:
            record.update(steps=step, wall_seconds=round(time.monotonic() - start, 1), loss=loss_avg)
            save_checkpoint(net, output, record)
    bar.close()
    record.update(steps=step, wall_seconds=round(time.monotonic() - start, 1), loss=loss_avg)
    save_checkpoint(net.eval(), output, record)
    return record
