"""Reaching a scale in stages: x8 as x2 three times, or x4 then x2.

A model used beyond the ratio it was trained for degrades; chaining models at their own
ratios does not (TUDSR's observation). :func:`plan_stages` turns ``--model`` and
``--scale`` into stages; each stage is an ordinary out-of-core job from the previous
stage's OME-Zarr store into its own, so memory stays that of one stage, and each stage
resumes on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SettingsError
from ..models.registry import get_entry


@dataclass(frozen=True)
class Stage:
    model: str
    scale: int


def _decompose(scale: int, allowed: list[int]) -> list[int] | None:
    """``scale`` as a product of ``allowed`` factors, largest factors first, or None."""
    if scale == 1:
        return []
    for f in sorted((a for a in allowed if a > 1), reverse=True):
        if scale % f == 0:
            rest = _decompose(scale // f, allowed)
            if rest is not None:
                return [f, *rest]
    return None


def plan_stages(model: str, scale: int | None) -> list[Stage]:
    """The stages that upscale by ``scale`` with ``model``.

    ``model`` is one name, or several separated by commas (one stage each, at each
    model's default scale; ``scale``, if given, must be their product). A single model
    asked for a scale it cannot do in one step runs as several steps of its own scales.
    """
    names = [m.strip() for m in model.split(",") if m.strip()] if "," in model else [model]
    if len(names) > 1:
        stages = [Stage(n, get_entry(n).default_scale) for n in names]
        total = 1
        for s in stages:
            total *= s.scale
        if scale is not None and scale != total:
            raise SettingsError(f"the stages {' then '.join(f'{s.model} x{s.scale}' for s in stages)} "
                                f"upscale x{total}, not x{scale}; drop --scale or change the models")
        return stages
    entry = get_entry(model)
    if scale is None or entry.scales is None or scale in entry.scales:
        return [Stage(model, scale if scale is not None else entry.default_scale)]
    factors = _decompose(scale, list(entry.scales))
    if factors is None:
        allowed = ", ".join(map(str, entry.scales))
        raise SettingsError(f"model {model!r} runs at scale {allowed}, and x{scale} is not a "
                            f"product of those; change --scale or give stages, e.g. "
                            f"--model {model},bicubic")
    return [Stage(model, f) for f in factors]


def stage_store(output: str, index: int) -> str:
    """Where stage ``index`` (0-based, not the last) keeps its output."""
    return f"{output.rstrip('/')}.stage{index + 1}.zarr"
