"""Reaching a scale in stages: x8 as x2 three times, or x4 then x2.

A model used beyond the ratio it was trained for degrades; chaining models at their own
ratios does not (TUDSR's observation). :func:`plan_stages` turns ``--model`` and
``--scale`` into stages; each stage is an ordinary out-of-core job from the previous
stage's OME-Zarr store into its own, so memory stays that of one stage, and each stage
resumes on its own.

``--model`` is one model, or stages separated by commas; a stage is ``name`` (run at the
model's default scale) or ``name:N`` (run at the integer scale ``N``), so
``span-x2,bicubic:3`` upscales x6. Stage ratios are integers: the tile grid is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import SettingsError
from ..models.entry import ModelEntry
from ..models.registry import get_entry, resolve_scale

#: A model that runs any integer scale: what suggestions use to make up a remainder.
ANY_SCALE_MODEL = "bicubic"


@dataclass(frozen=True)
class Stage:
    model: str
    scale: int


@dataclass(frozen=True)
class Suggestion:
    """A ``--model``/``--scale`` pair the planner accepts; ``model`` None keeps the user's."""

    model: str | None
    scale: int

    def __str__(self) -> str:
        if self.model is None:
            return f"--scale {self.scale}"
        return f"--model {self.model} --scale {self.scale}"


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


def _split_stage(text: str) -> tuple[str, int | None]:
    """``name:N`` as ``(name, N)``, anything else as ``(text, None)``.

    Only digits after the last colon make a scale, so a path such as ``C:\\w.pth`` stays
    a name.
    """
    name, colon, tail = text.rpartition(":")
    if colon and name and tail.isascii() and tail.isdigit():
        return name.strip(), int(tail)
    return text, None


def _scales_text(entry: ModelEntry) -> str:
    if entry.scales is None:
        return "any integer scale >= 1"
    return f"scale {', '.join(map(str, entry.scales))}"


def _parse_stage(text: str) -> Stage:
    """One stage of a comma list, its scale checked against what the model runs at."""
    name, scale = _split_stage(text)
    entry = get_entry(name)
    runs = scale is None or (scale >= 1 and (entry.scales is None or scale in entry.scales))
    if not runs:
        raise SettingsError(f"stage {text!r}: model {entry.name!r} runs at "
                            f"{_scales_text(entry)}, not {scale}; change the stage's :N")
    return Stage(entry.name, resolve_scale(name, scale))


def _describe(stages: list[Stage]) -> str:
    return " then ".join(f"{s.model} x{s.scale}" for s in stages)


def _explicit_stages(parts: list[str], scale: int | None) -> list[Stage]:
    stages = [_parse_stage(p) for p in parts]
    total = math.prod(s.scale for s in stages)
    if scale is not None and scale != total:
        raise SettingsError(f"the stages {_describe(stages)} upscale x{total}, not x{scale}; "
                            "drop --scale or change the models")
    return stages


def _reachable(factors: tuple[int, ...], limit: int) -> set[int]:
    """The scales up to ``limit`` that one or more stages at ``factors`` reach."""
    found: set[int] = set()
    frontier = {1}
    while frontier:
        frontier = {p * f for p in frontier for f in factors if p * f <= limit} - found
        found |= frontier
    return found


def _stage_text(name: str, entry: ModelEntry, factor: int) -> str:
    return name if factor == entry.default_scale else f"{name}:{factor}"


def suggestions(model: str, scale: int) -> list[Suggestion]:
    """What runs instead of ``model`` at ``scale`` when its scales cannot multiply to it.

    In order: the model's own stages followed by a bicubic stage that makes up the rest
    (x6 with span-x2: ``span-x2,bicubic:3``), the nearest scales below and above that the
    model reaches alone, and bicubic alone at ``scale``.
    """
    entry = get_entry(model)
    name = entry.name
    if entry.scales is None:  # runs every scale itself
        return [Suggestion(None, scale)]
    factors = entry.scales
    reachable = _reachable(factors, scale * max(factors))
    found: list[Suggestion] = []
    divisors = [r for r in reachable if 1 < r < scale and scale % r == 0]
    if divisors:
        lead = max(divisors)
        stages = [_stage_text(name, entry, f) for f in _decompose(lead, list(factors)) or []]
        chain = ",".join([*stages, f"{ANY_SCALE_MODEL}:{scale // lead}"])
        found.append(Suggestion(chain, scale))
    below = [r for r in reachable if r < scale]
    above = [r for r in reachable if r > scale]
    nearest = ([max(below)] if below else []) + ([min(above)] if above else [])
    found += [Suggestion(None, r) for r in nearest]
    found.append(Suggestion(ANY_SCALE_MODEL, scale))
    return found


def _either(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def plan_stages(model: str, scale: int | None) -> list[Stage]:
    """The stages that upscale by ``scale`` with ``model``.

    ``model`` is one name, or stages separated by commas, each ``name`` or ``name:N``
    (see the module's documentation); ``scale``, if given, must be the stages' product.
    A single model asked for a scale it cannot do in one step runs as several steps of
    its own scales. Stage names are canonical (``SPAN_x2`` runs as ``span-x2``, a weights
    file by its absolute path).
    """
    if scale is not None and scale < 1:
        raise SettingsError(f"--scale must be a positive integer, got {scale}")
    parts = [p.strip() for p in model.split(",") if p.strip()] or [model]
    if len(parts) > 1 or _split_stage(parts[0])[1] is not None:
        return _explicit_stages(parts, scale)
    name = parts[0]
    entry = get_entry(name)
    if scale is None or entry.scales is None or scale in entry.scales:
        return [Stage(entry.name, resolve_scale(name, scale))]
    factors = _decompose(scale, list(entry.scales))
    if not factors:  # None, or [] for x1, which no stage of this model gives
        tries = _either([str(s) for s in suggestions(name, scale)])
        raise SettingsError(f"model {entry.name!r} runs at {_scales_text(entry)}, and "
                            f"x{scale} is not a product of those; try {tries}")
    return [Stage(entry.name, f) for f in factors]


def stage_store(output: str, index: int) -> str:
    """Where stage ``index`` (0-based, not the last) keeps its output."""
    return f"{output.rstrip('/')}.stage{index + 1}.zarr"
