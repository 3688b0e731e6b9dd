"""``tilewave tune``: fine-tuning a model on the user's own scan (internal learning).

The image is its own teacher (after ZSSR, Shocher et al. 2018): crops of the input are
the high-resolution targets, and their inputs are made the way the scan itself was
made, downscaled x2 (box or antialiased bicubic) and, for a JPEG-compressed input,
compressed again at the quality its own tables give (:mod:`tilewave.storage.compression`)
in its own colour layout. Glass, flat and nodata crops are skipped with the measure
``--adaptive`` uses (:mod:`tilewave.pipeline.difficulty`).

A strip along the image's long side (its last eighth) is never trained on: crops of it,
degraded the same way with fixed seeds, score the network at every checkpoint, and the
weights that scored best, the base model's included, are written. So tuning never
returns weights that do worse than the base model on the image's held-out part.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import SettingsError
from ..models.conditions import jpeg_level
from ..storage.compression import Compression
from ..storage.inputs import InputImage, open_input
from .crops import CropSource, Region
from .degradation import Chroma, Degraded, downscale, jpeg_roundtrip

#: The model tuned when none is named: the scan-aware SPAN.
DEFAULT_BASE = "span-x2-scan"
#: Validation crops: how many, and their low-resolution core.
VALIDATION_CROPS = 12
VALIDATION_CORE = 64


@dataclass(frozen=True, kw_only=True)
class TuneSettings:
    """What ``tilewave tune`` was asked for."""

    model: str = DEFAULT_BASE
    minutes: float | None = 10.0
    steps: int | None = None
    batch: int = 8
    #: Low-resolution core of a training crop.
    crop: int = 48
    lr: float = 5e-5
    seed: int = 0
    #: A region ``(y0, y1, x0, x1)`` of the input never read, to measure the result on.
    exclude: Region | None = None
    threads: int | None = None
    #: How often the state is checkpointed (and the held-out strip scored).
    checkpoint_seconds: float = 30.0


@dataclass(frozen=True, kw_only=True)
class OwnDegradation:
    """How this scan's low-resolution inputs are made: its own JPEG (if any), its dtype."""

    scale: int = 2
    quality: int | None = None
    chroma: Chroma = "444"
    sixteen_bit: bool = False
    steps: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, image: InputImage) -> OwnDegradation:
        compression = image.compression or Compression(kind="unknown")
        if compression.lossy_jpeg and compression.quality and image.dtype == np.uint8:
            colour = compression.colour or ""
            chroma: Chroma = ("rgb" if colour.startswith("RGB") else
                              "444" if colour in ("YCbCr 4:4:4", "grey") else "420")
            return cls(quality=compression.quality, chroma=chroma,
                       steps=["box or bicubic x2", f"JPEG q{compression.quality} {chroma}"])
        return cls(sixteen_bit=image.dtype == np.uint16, steps=["box or bicubic x2"])

    def make(self, hr: np.ndarray, rng: random.Random, kind: str | None = None) -> Degraded:
        """The input of a ``(c, h, w)`` unit-space crop: random downscaling, or ``kind``."""
        kind = kind or ("box" if rng.random() < 0.5 else "bicubic")
        lr = downscale(hr, self.scale, kind)  # type: ignore[arg-type]
        if self.quality is not None:
            lr = jpeg_roundtrip(lr, self.quality, self.chroma)
        else:
            top = 65535.0 if self.sixteen_bit else 255.0
            lr = np.rint(lr * top).astype(np.float32) / top
        return Degraded(lr=lr, hr=hr, gain=1.0, history=kind, quality=self.quality)


def split(image: InputImage, need: int) -> tuple[Region, Region]:
    """The training region and the held-out strip (the last eighth of the long side, at
    least ``need`` pixels) of ``image``."""
    h, w = image.height, image.width
    if w >= h:
        strip = max(w // 8, need)
        if w - strip < need or h < need:
            raise SettingsError(f"input {image.path!r} is {w} x {h} pixels, too small to tune "
                                f"on: it needs at least {2 * need} x {need}")
        return (0, h, 0, w - strip), (0, h, w - strip, w)
    strip = max(h // 8, need)
    if h - strip < need or w < need:
        raise SettingsError(f"input {image.path!r} is {w} x {h} pixels, too small to tune on: "
                            f"it needs at least {need} x {2 * need}")
    return (0, h - strip, 0, w), (h - strip, h, 0, w)


class HeldOut:
    """Fixed crops of the held-out strip and their inputs: the score is the mean PSNR (dB,
    unit range) of the network's output of their cores."""

    def __init__(self, source: CropSource, degradation: OwnDegradation, margin: int, seed: int):
        rng = random.Random(seed ^ 0x5EED)
        s, m, core = degradation.scale, margin, VALIDATION_CORE
        self.level = jpeg_level(degradation.quality)
        self.pairs = []
        for i in range(VALIDATION_CROPS):
            hr = source.crop((core + 2 * m) * s, rng)
            made = degradation.make(hr, rng, "bicubic" if i % 2 else "box")
            self.pairs.append((made.lr, made.hr[:, m * s : (m + core) * s, m * s : (m + core) * s]))

    def score(self, trainee: Any) -> float:
        import torch

        device = next(trainee.net.parameters()).device
        scores = []
        for lr, hr in self.pairs:
            x = torch.from_numpy(lr)[None].to(device)
            condition = torch.tensor([[self.level]], device=device)
            out = trainee.forward(x, (0, 0), condition)[0].clamp(0, 1).float().cpu().numpy()
            mse = float(((out - hr) ** 2).mean())
            scores.append(10 * np.log10(1.0 / max(mse, 1e-12)))
        return float(np.mean(scores))


def not_easy(nodata: float | None) -> Any:
    """A crop filter: False for glass, flat and nodata crops (``--adaptive``'s measure)."""
    from ..pipeline.difficulty import assess

    def accept(crop: np.ndarray) -> bool:
        return not assess(crop, None if nodata is None else nodata).easy

    return accept


#: The shipped models ``tune`` starts from, and the margin (input pixels) each reads.
TUNABLE = {"span-x2": 8, "span-x2-scan": 8, "uniba-x2": 12, "uniba-x2-scan": 12}


def check_tunable(model: str) -> int:
    """Refuse a base model ``tune`` cannot train (before Ray starts); its margin."""
    from ..models.registry import canonical_name, get_entry
    from ..models.span.weights import is_span_file
    from ..models.uniba import _read_header, is_uniba_file

    name = canonical_name(model)
    if name in TUNABLE:
        requires = get_entry(name).requires
        if requires:
            from ..models.ncnn_files import require_wheel

            require_wheel(requires, name)
        return TUNABLE[name]
    if name.endswith(".safetensors") and os.path.isfile(name):
        if is_span_file(name):
            return 8
        if is_uniba_file(name):
            cfg = _read_header(name)[0]
            if not cfg.diffusion and cfg.scale == 2:
                return cfg.halo
    raise SettingsError(f"model {model!r} cannot be tuned: tilewave tunes {', '.join(TUNABLE)} "
                        "and x2 weights files tune or train wrote from them; choose one of those")


def check_input(image: InputImage, margin: int, crop: int = 48) -> None:
    """Refuse an input too small for a training and a held-out strip."""
    need = max((crop + 2 * margin) * 2, (VALIDATION_CORE + 2 * margin) * 2)
    split(image, need)


def check_output(output: str, overwrite: bool, resume: bool) -> str:
    """Refuse an output that exists (unless ``overwrite``) or that is not a weights file;
    the checkpoint path beside it, refused if it exists without ``resume``."""
    from ..storage.writable import check_creatable

    if not output.endswith(".safetensors"):
        raise SettingsError(f"-o {output!r} must end in .safetensors")
    if os.path.isdir(output):
        raise SettingsError(f"-o {output!r} is a folder; give a file name")
    if os.path.exists(output) and not overwrite:
        raise SettingsError(f"{output!r} exists; pass --overwrite to replace it")
    checkpoint = output + ".ckpt"
    if os.path.exists(checkpoint) and not (resume or overwrite):
        raise SettingsError(f"an interrupted tune left {checkpoint!r}; pass --resume to "
                            "continue it or --overwrite to start again")
    if os.path.exists(checkpoint) and overwrite and not resume:
        os.remove(checkpoint)
    if not os.path.exists(output):
        check_creatable(output)
    return checkpoint


def tune_weights(input_path: str, output: str, settings: TuneSettings,
                 report: Any = None) -> dict[str, Any]:
    """Fine-tune ``settings.model`` on the image at ``input_path`` and write the weights to
    ``output`` (checkpointing beside it); returns the training record. Runs where it is
    called: :mod:`tilewave.actors.tuner` calls it on a Ray worker."""
    from .finetune import FinetuneSettings, finetune
    from .networks import trainee_for
    from .pairs import PairSampler

    image = open_input(input_path)
    trainee = trainee_for(settings.model)
    if trainee.scale != 2:
        raise SettingsError(f"model {settings.model!r} is x{trainee.scale}; tilewave tunes x2 models")
    degradation = OwnDegradation.of(image)
    s, m = degradation.scale, trainee.margin
    crop = -(-settings.crop // trainee.multiple) * trainee.multiple
    need = max((crop + 2 * m) * s, (VALIDATION_CORE + 2 * m) * s)
    train_region, held_region = split(image, need)
    nodata = image.metadata.get("nodata")
    accept = not_easy(nodata)
    train = CropSource(image, region=train_region, accept=accept, exclude=settings.exclude)
    held = CropSource(image, region=held_region, accept=accept, exclude=settings.exclude)
    validation = HeldOut(held, degradation, m, settings.seed)
    record: dict[str, Any] = {
        "tuned_from": settings.model, "input": os.path.basename(image.path),
        "input_compression": image.compression.describe() if image.compression else None,
        "degradation": degradation.steps, "training_region": list(train_region),
        "held_out_region": list(held_region),
        **({"excluded_region": list(settings.exclude)} if settings.exclude else {}),
        "crop": crop, "margin": m, "objective": "L1",
        "trained_for": f"this scan: {image.path}",
        "settings": {k: v for k, v in asdict(settings).items()
                     if k not in ("threads", "checkpoint_seconds")},
    }
    ft = FinetuneSettings(batch=settings.batch, lr=settings.lr, steps=settings.steps,
                          minutes=settings.minutes, seed=settings.seed, threads=settings.threads,
                          checkpoint_seconds=settings.checkpoint_seconds)
    sampler = PairSampler([train], degradation.make, s, crop, m)
    identity = {"model": settings.model, "input": image.fingerprint(), "exclude": settings.exclude}
    record = finetune(trainee, sampler, ft, output, record, checkpoint=output + ".ckpt",
                      validate=validation.score, report=report, identity=identity)
    record["held_out_gain_db"] = record["best_score"] - record["start_score"]
    return record
