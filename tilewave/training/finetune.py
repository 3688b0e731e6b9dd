"""Fine-tuning a network on degraded pairs, within a time budget, resumably.

The loop is the same for tilewave's scan-aware models (``tools/train_scan_models.py``)
and for ``tilewave tune`` on a user's own scan: AdamW, a short warm-up then a cosine
decay of the learning rate over the budget (steps or minutes, whichever ends first), an
L1 loss weighted per crop, gradients clipped; a loss that runs away (three times its
lowest running value, or not finite) rolls the weights back to the last settled ones and
halves the rate. Every ``checkpoint_seconds`` the state
(weights, optimiser, step, time spent, random state) goes to a checkpoint file, so an
interrupted run continues where it stopped; a ``validate`` function, if given, scores
the network then, and the best-scoring weights, the starting ones included, are what
is written at the end: fine-tuning never returns a network worse on that score than the
one it started from.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from ..errors import SettingsError
from .networks import Trainee
from .pairs import PairSampler
from .progress import Report, Status
from .threads import torch_threads


@dataclass(frozen=True, kw_only=True)
class FinetuneSettings:
    batch: int = 8
    #: Peak learning rate.
    lr: float = 2e-4
    steps: int | None = None
    minutes: float | None = None
    seed: int = 0
    #: CPU threads (None: torch's default).
    threads: int | None = None
    checkpoint_seconds: float = 60.0

    def resumable_fields(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be continued (the budget may change)."""
        return {k: v for k, v in asdict(self).items() if k not in ("steps", "minutes", "threads",
                                                                  "checkpoint_seconds")}


#: Steps before the running loss is trusted as a floor to judge spikes against.
SETTLE_STEPS = 50
#: A running loss this many times the floor is a divergence: roll back, halve the rate.
DIVERGED = 3.0
#: Below this factor of the learning rate, training gives up and keeps what it has.
MIN_LR_SCALE = 1 / 64


def lr_factor(progress: float, warmup: float = 0.03) -> float:
    """The learning rate's factor at ``progress`` (0 to 1) of the budget: a linear warm-up
    over the first 3 %, then a cosine decay to 2 %."""
    if progress < warmup:
        return max(progress / warmup, 0.01)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup)))) * 0.98 + 0.02


#: Scores a network (higher is better), in evaluation mode; called at checkpoints.
Validate = Callable[[Trainee], float]


@dataclass
class _State:
    step: int = 0
    seconds: float = 0.0
    loss: float | None = None
    best_score: float | None = None
    start_score: float | None = None
    best_step: int = 0
    best: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    #: The lowest running loss seen, the learning rate's factor after roll-backs, and the
    #: steps where a roll-back happened.
    floor: float | None = None
    lr_scale: float = 1.0
    rollbacks: list[int] = field(default_factory=list)
    #: Weights and optimiser state of the last step whose running loss was near the floor.
    good: tuple[Any, Any] | None = None


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists, as a checkpoint read back gives them."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    """Lists back to the tuples :meth:`random.Random.setstate` wants."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _diverged(state: _State, value: float, running: float) -> bool:
    """A non-finite loss, or a running loss far above the floor once it has settled."""
    if not math.isfinite(value):
        return True
    return state.floor is not None and running > DIVERGED * state.floor


def _score(trainee: Trainee, validate: Validate) -> float:
    trainee.net.eval()
    try:
        with torch.inference_mode():
            return float(validate(trainee))
    finally:
        trainee.net.train()


def finetune(trainee: Trainee, sampler: PairSampler, settings: FinetuneSettings, output: str,
             record: dict[str, Any], checkpoint: str | None = None,
             validate: Validate | None = None, report: Report | None = None,
             identity: dict[str, Any] | None = None,
             monitor: Callable[[Trainee], dict[str, float]] | None = None) -> dict[str, Any]:
    """Train ``trainee`` on ``sampler``'s pairs and write the result to ``output`` with
    ``record`` (extended with what happened) as its training record; returns the record.
    ``report`` is told the :class:`Status` after every step. ``monitor``, if given,
    measures the network at every checkpoint for the record's ``history`` (it decides
    nothing).

    With ``checkpoint``, the run continues from that file if it holds a run with the same
    settings and ``identity`` (what else must not change: the base model, the input), and
    keeps it current; it is removed once ``output`` is written.
    """
    if settings.steps is None and settings.minutes is None:
        raise SettingsError("give --steps or --minutes (or both) to bound the training")
    with torch_threads(settings.threads):
        return _finetune(trainee, sampler, settings, output, record, checkpoint, validate,
                         report, identity, monitor)


def _finetune(trainee: Trainee, sampler: PairSampler, settings: FinetuneSettings, output: str,  # noqa: C901
              record: dict[str, Any], checkpoint: str | None, validate: Validate | None,
              report: Report | None, identity: dict[str, Any] | None,
              monitor: Callable[[Trainee], dict[str, float]] | None) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = trainee.net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=0.0)
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    state = _State()
    key = {**settings.resumable_fields(), **(identity or {})}
    resumed = False
    if checkpoint and os.path.exists(checkpoint):
        # Tensors and plain values only: a checkpoint is read without running code from it.
        try:
            saved = torch.load(checkpoint, map_location=device, weights_only=True)
        except Exception as exc:
            raise SettingsError(f"checkpoint {checkpoint!r} cannot be read ({type(exc).__name__}); "
                                "delete it to start again") from None
        if saved.get("key") != _plain(key):
            raise SettingsError(f"checkpoint {checkpoint!r} is of a run with other settings; "
                                "rerun with those, or delete it to start again")
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        rng.setstate(_tuples(saved["rng"]))
        torch.set_rng_state(saved["torch_rng"])
        state = _State(**saved["state"])
        resumed = True
    if validate is not None and state.best_score is None:
        state.best_score = state.start_score = _score(trainee, validate)
        state.best = copy.deepcopy(net.state_dict())

    def save_checkpoint() -> None:
        if checkpoint is None:
            return
        tmp = checkpoint + ".tmp"
        torch.save({"key": _plain(key), "net": net.state_dict(), "opt": opt.state_dict(),
                    "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                    "state": {f.name: getattr(state, f.name) for f in fields(state)}}, tmp)
        os.replace(tmp, checkpoint)

    budget = settings.minutes * 60 if settings.minutes is not None else None
    total = settings.steps or 10**9

    def tell() -> None:
        if report is None:
            return
        if budget is None or (settings.steps is not None
                              and state.step / settings.steps >= state.seconds / budget):
            total_, done, unit = float(total), float(state.step), "step"
        else:
            total_, done, unit = budget, min(state.seconds, budget), "s"
        report(Status(state.step, state.seconds, total_, done, unit, state.loss,
                      state.best_score, state.start_score))

    tell()
    last_save = time.monotonic()
    started = time.monotonic() - state.seconds
    while True:
        state.seconds = time.monotonic() - started
        fraction = max(state.step / total, state.seconds / budget if budget else 0.0)
        if fraction >= 1.0:
            break
        for group in opt.param_groups:
            group["lr"] = settings.lr * state.lr_scale * lr_factor(fraction)
        batch = sampler.batch(settings.batch, rng)
        multiple = trainee.multiple
        origin = (rng.randrange(0, 1 << 14) * multiple, rng.randrange(0, 1 << 14) * multiple)
        out = trainee.forward(batch.lr.to(device), origin, batch.condition.to(device))
        error = (out - batch.hr.to(device)).abs().mean(dim=(1, 2, 3))
        loss = (error * batch.weight.to(device)).mean()
        value = float(loss.item())
        running = value if state.loss is None else 0.98 * state.loss + 0.02 * value
        if _diverged(state, value, running):
            # A network with very unequal weight scales (SPAN's folded form) can be thrown
            # off by one coherent step; seen twice at a rate of 1e-4. Back to the last
            # settled weights, at half the rate.
            if state.good is None or state.lr_scale / 2 < MIN_LR_SCALE:
                record["stopped"] = f"the loss diverged at step {state.step}"
                break
            net.load_state_dict(state.good[0])
            opt.load_state_dict(state.good[1])
            state.lr_scale /= 2
            state.rollbacks.append(state.step)
            state.loss = state.floor
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        state.step += 1
        state.loss = running
        if state.step >= SETTLE_STEPS:
            state.floor = running if state.floor is None else min(state.floor, running)
            if state.step % 25 == 0 and running <= 1.5 * state.floor:
                state.good = (copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()))
        state.seconds = time.monotonic() - started
        if time.monotonic() - last_save >= settings.checkpoint_seconds:
            if validate is not None:
                score = _score(trainee, validate)
                if state.best_score is None or score > state.best_score:
                    state.best_score, state.best_step = score, state.step
                    state.best = copy.deepcopy(net.state_dict())
            if monitor is not None:
                trainee.net.eval()
                with torch.inference_mode():
                    measured = monitor(trainee)
                trainee.net.train()
                state.history.append({"step": state.step, "loss": running, **measured})
            state.seconds = time.monotonic() - started
            save_checkpoint()
            last_save = time.monotonic()
        tell()
    if monitor is not None:
        trainee.net.eval()
        with torch.inference_mode():
            state.history.append({"step": state.step, "loss": state.loss or 0.0, **monitor(trainee)})
        trainee.net.train()
    if validate is not None:
        score = _score(trainee, validate)
        if state.best_score is None or score > state.best_score:
            state.best_score, state.best_step = score, state.step
            state.best = copy.deepcopy(net.state_dict())
        assert state.best is not None
        net.load_state_dict(state.best)
        record.update(start_score=state.start_score, best_score=state.best_score,
                      best_step=state.best_step)
    net.eval()
    record.update(steps=state.step, wall_seconds=round(state.seconds, 1), loss=state.loss,
                  device=str(device), threads=torch.get_num_threads(), resumed=resumed,
                  batch=settings.batch, lr=settings.lr, seed=settings.seed,
                  rollbacks=state.rollbacks, **({"history": state.history} if monitor else {}))
    trainee.save(output, record)
    if checkpoint and os.path.exists(checkpoint):
        os.remove(checkpoint)
    return record
