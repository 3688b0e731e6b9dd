"""Quality of an upscaling model against ground truth: PSNR and SSIM (scikit-image),
on RGB images downscaled by the model's scale and upscaled back, borders of ``scale``
pixels cropped. ``train_uniba_x2.py`` reports it for the weights it trains."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tilewave.models.base import TileModel
from tilewave.models.uniba.train import downscale


def evaluate(model: TileModel, images: dict[str, np.ndarray]) -> dict[str, Any]:
    """``images`` maps names to ``(3, h, w)`` unit-space float32 ground truth."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from tilewave.models.bicubic import bicubic_upscale

    s = model.descriptor.scale
    rows = {}
    for name, gt in images.items():
        h, w = (gt.shape[1] // s) * s, (gt.shape[2] // s) * s
        gt = gt[:, :h, :w]
        with torch.inference_mode():
            lr = downscale(torch.from_numpy(np.ascontiguousarray(gt))[None], s)
            outs = {"model": model.forward_image(lr)[0], "bicubic": bicubic_upscale(lr, s)[0]}
        ref = _u8(gt)[:, s:-s, s:-s]
        row = {}
        for key, out in outs.items():
            pred = _u8(out.numpy())[:, s:-s, s:-s]
            row[f"{key}_psnr"] = float(peak_signal_noise_ratio(ref, pred, data_range=255))
            row[f"{key}_ssim"] = float(structural_similarity(ref, pred, channel_axis=0, data_range=255))
        rows[name] = row
    mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in next(iter(rows.values()))}
    mean["gain_db"] = mean["model_psnr"] - mean["bicubic_psnr"]
    return {"images": rows, "mean": mean}


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x, np.float32) * 255), 0, 255).astype(np.uint8)
