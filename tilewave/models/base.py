"""The contract every upscaling model fulfils.

A model is described by a frozen :class:`ModelDescriptor` (what the scheduler and the
workers need to know before running it) and implemented as a :class:`TileModel` (how one
tile or a whole image is computed). Reading weights, describing the architecture and
running it are separate steps, so that a descriptor can be listed without loading weights.

Tensors are ``(1, channels, height, width)`` float tensors in *unit space*: integer
images are divided by their dtype's maximum, float images are passed as they are. The
workers convert to and from the image dtype; models never see dtypes.

Tiling modes
------------
``halo``
    The model has a finite receptive field of ``halo`` input pixels. Every tile is run on
    its input window grown by the halo and cropped back, which equals whole-image
    inference exactly. Tiles are independent.
``blend``
    Tiles overlap their right and lower neighbours; the overlapping predictions are
    feathered with a weight ramp. For models whose receptive field is large or unknown.
``context``
    The model itself hands *contexts* (for a transformer, attention keys and values; for
    a diffusion model, one such set per step) from a tile to its right, lower and
    lower-right neighbours, and consumes those of its left, upper and upper-left ones.
    Tiles run as a raster-order wavefront.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch is needed to run a model, not to describe or list one
    import torch

TilingMode = Literal["halo", "blend", "context"]
#: A model's ``forward_image``, or what stands in for it: ``(n, c, h, w)`` in, upscaled out.
Forward = Callable[["torch.Tensor"], "torch.Tensor"]
TILING_MODES: tuple[TilingMode, ...] = ("halo", "blend", "context")

# Context directions are the DAG's, defined once there; models name them the same way.
from ..pipeline.directions import ARRIVES_AS as ARRIVES_AS  # noqa: E402
from ..pipeline.directions import INBOUND as INBOUND  # noqa: E402
from ..pipeline.directions import OUTBOUND as OUTBOUND  # noqa: E402
from ..pipeline.directions import Direction as Direction  # noqa: E402


@dataclass(frozen=True)
class SizeRequirements:
    """Constraints on the size of the input window a model accepts.

    Windows that do not meet them are padded (replicating the border) by the worker and
    the output is cropped back, so models never see odd sizes they cannot handle.
    """

    minimum: int = 1
    multiple_of: int = 1
    #: Windows must be square (some transformer architectures).
    square: bool = False

    def padded(self, size: int) -> int:
        """The smallest acceptable size that is at least ``size``."""
        size = max(size, self.minimum)
        return -(-size // self.multiple_of) * self.multiple_of

    def padded_shape(self, height: int, width: int) -> tuple[int, int]:
        """The smallest acceptable window shape covering ``height`` x ``width``."""
        if self.square:
            side = self.padded(max(height, width))
            return side, side
        return self.padded(height), self.padded(width)


@dataclass(frozen=True)
class SamplerSettings:
    """How a multi-step (diffusion) model samples: ``--steps``, ``--noise``, ``--seed``,
    and for text-conditioned upscalers (``sd-x4``) the prompt, guidance, noise level and
    early stop.

    Noise is a function of ``seed`` and the output position, not of a stream, so the
    same settings give the same bytes whatever the tiling, the workers or a resume.
    A setting a model does not have is None in its defaults (and refused if given).
    """

    steps: int = 4
    #: Standard deviation of the sampler's noise, in unit-space pixel values; 0 is
    #: deterministic.
    noise: float | None = 0.0
    seed: int = 0
    _: KW_ONLY  # the rest by name: inserting a field shifts no value
    prompt: str | None = None
    negative_prompt: str | None = None
    #: Classifier-free guidance scale; at most 1 (or equal prompts) runs one pass per step.
    guidance: float | None = None
    #: The noise level the low-resolution input is augmented with (the upscaler's class label).
    noise_level: int | None = None
    #: A tile stops sampling once its estimate of the result moves by less than this
    #: (mean absolute change relative to its mean magnitude) in one step; 0: never.
    early_stop: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The settings the model has (None left out): kept in a job's manifest."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class ModelDescriptor:
    """What tilewave must know about a model before it runs it."""

    name: str
    scale: int
    #: Supported tiling modes; the first is the default.
    modes: tuple[TilingMode, ...]
    _: KW_ONLY  # the rest by name: inserting a field shifts no value
    #: Input pixels on each side that a tile must read to be exact in ``halo`` mode.
    halo: int = 0
    #: Channel counts the model accepts (alpha is processed like any other channel).
    channels: tuple[int, ...] = (1, 3, 4)
    supports_half: bool = False
    size: SizeRequirements = field(default_factory=SizeRequirements)
    #: Tiles must be whole multiples of this many input pixels (block-based models).
    block: int = 1
    #: A short description of what a context holds, for ``context`` models.
    context_format: str | None = None
    #: Where the weights come from (``builtin`` for models without weights).
    weights: str = "builtin"
    description: str = ""
    parameters: int = 0
    #: False when ``halo`` is a default rather than a measured receptive field (weights
    #: of an arbitrary architecture): ``halo`` mode then needs an explicit halo.
    halo_measured: bool = True
    #: A multi-step sampler's default settings; None for models that run in one pass.
    sampler: SamplerSettings | None = None
    #: The largest ``noise`` a sampler was trained for.
    noise_max: float = 0.0
    #: The largest ``noise_level`` a text-conditioned upscaler accepts.
    noise_level_max: int = 0
    #: The most ``steps`` its sampler can take; 0: no limit.
    steps_max: int = 0
    #: The smallest ``--tile`` the model runs at in ``context`` mode.
    min_tile: int = 1
    #: The output depends on where a window lies in the image (position-keyed noise), so
    #: in ``halo`` and ``blend`` modes the model runs through :meth:`TileModel.forward_tile`
    #: (with no contexts) rather than ``forward_image``, and is never batched.
    positional: bool = False
    #: In ``context`` mode the model accepts a neighbour that left no context (an easy
    #: tile of an ``adaptive`` job, upscaled with bicubic) and runs as if it were absent.
    tolerates_missing_contexts: bool = False
    #: What the model was trained on, for ``tilewave models`` ("" where nothing was).
    trained_for: str = ""
    #: For a model trained on clean images only: the scan-aware model to use instead on
    #: JPEG-compressed inputs (the job names it in one line when it meets one).
    scan_variant: str | None = None
    #: What the model is told about its input besides the pixels
    #: (:mod:`tilewave.models.conditions`): the job passes it to ``with_condition``.
    conditions: tuple[str, ...] = ()
    #: A multi-step ``context`` model that runs one sampler step of a tile at a time
    #: (:class:`SteppedModel`), so that ``--schedule step`` can interleave the tiles'
    #: steps and keep one step's contexts in flight instead of all of them.
    stepwise: bool = False
    #: About how many bytes one sampler step's outgoing contexts of a tile take, as
    #: ``(per input pixel of the tile's side, constant)``: what ``--schedule auto``
    #: weighs (a tile's contexts of all steps travel together under ``--schedule tile``).
    step_context_bytes: tuple[int, int] = (0, 0)
    #: The model is shown the whole input, box-averaged to about this many pixels on its
    #: short side (:mod:`tilewave.pipeline.overview`), once per job, through
    #: ``with_condition({"overview": pixels})``; 0: it is not.
    overview: int = 0

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"model {self.name}: scale must be >= 1, got {self.scale}")
        if not self.modes or any(m not in TILING_MODES for m in self.modes):
            raise ValueError(f"model {self.name}: modes must be a subset of {TILING_MODES}")
        if "context" in self.modes and self.context_format is None:
            raise ValueError(f"model {self.name}: context models must state context_format")

    @property
    def default_mode(self) -> TilingMode:
        return self.modes[0]


@dataclass(kw_only=True, frozen=True)
class TileRequest:
    """Where a tile sits, handed to :meth:`TileModel.forward_tile` in ``context`` mode.

    ``window`` is the input region ``(y0, y1, x0, x1)`` that the input tensor covers (the
    core plus the model's halo, clipped to the image); ``core`` is the region whose
    output the model must return. ``contexts`` maps ``left``/``top``/``top_left`` to what
    that neighbour emitted, or to None where the neighbour lies outside the image.
    A stochastic model (a diffusion sampler) draws its noise as a function of the output
    position (:func:`~tilewave.models.position_noise.position_noise`), never from a
    stream, so that the tile size, a retry or a resume does not change the bytes.
    """

    row: int
    col: int
    core: tuple[int, int, int, int]
    window: tuple[int, int, int, int]
    image_size: tuple[int, int]
    contexts: Mapping[str, Any]


@dataclass
class TileResult:
    """What :meth:`TileModel.forward_tile` returns.

    ``output`` covers exactly the request's core times the scale. ``contexts`` maps
    ``right``/``below``/``below_right`` to any picklable object (tensors included) for
    the neighbour in that direction; a multi-step model keeps one entry per step inside
    its object. Entries for neighbours outside the image may be left out.
    """

    output: torch.Tensor
    contexts: dict[str, Any] = field(default_factory=dict)
    #: A sampler's ``(steps run, steps asked for)``: fewer where the tile stopped early.
    steps: tuple[int, int] | None = None


@dataclass
class StepResult:
    """What :meth:`SteppedModel.forward_step` returns for one sampler step of one tile.

    ``state`` is what the tile's next step starts from (its current estimate and any
    small sampler state: tensors in plain containers, picklable; it is kept in the job's
    working store between steps, so a resumed job continues from it byte for byte);
    None after the last step. ``contexts`` maps ``right``/``below``/``below_right`` to
    *this step's* context for that neighbour. ``output`` is set after the last step only,
    as :attr:`TileResult.output`.
    """

    state: Any
    contexts: dict[str, Any] = field(default_factory=dict)
    output: torch.Tensor | None = None
    #: After the last step: ``(steps run, steps asked for)``, as :attr:`TileResult.steps`.
    steps: tuple[int, int] | None = None


@runtime_checkable
class SteppedModel(Protocol):
    """A multi-step context model that runs one sampler step of one tile per call.

    Step ``k`` of tile ``(r, c)`` depends on step ``k`` of its left, top and top-left
    neighbours (whose step-``k`` contexts arrive in ``request.contexts``) and on its own
    step ``k - 1`` (``state``; None for ``k = 0``). ``x`` is the tile's input window,
    read again for every step. ``forward_tile`` must equal running every step in turn
    (:func:`run_all_steps`), byte for byte, so both schedules write the same output.
    """

    descriptor: ModelDescriptor

    def forward_step(self, x: torch.Tensor, request: TileRequest, step: int,
                     state: Any) -> StepResult:
        """Run sampler step ``step`` of the tile in ``request``."""
        ...


def run_all_steps(model: SteppedModel, x: torch.Tensor, request: TileRequest,
                  steps: int) -> TileResult:
    """A tile's ``steps`` sampler steps in one call: ``forward_tile`` of a stepped model.

    Inbound contexts are per-step lists (what this function hands on as outbound), an
    entry of which may be None (that neighbour absent at that step); a neighbour's whole
    context may be None too.
    """
    import dataclasses

    state: Any = None
    outbound: dict[str, list[Any]] = {}
    result = StepResult(state=None)
    for k in range(steps):
        step_in = {d: v[k] for d, v in request.contexts.items() if v is not None}
        result = model.forward_step(x, dataclasses.replace(request, contexts=step_in), k, state)
        for d, value in result.contexts.items():
            outbound.setdefault(d, []).append(value)
        state = result.state
    if result.output is None:
        raise RuntimeError(f"{model.descriptor.name}: the last sampler step returned no output")
    return TileResult(result.output, outbound, result.steps)


def runs_bandwise(descriptor: ModelDescriptor, channels: int) -> bool:
    """Whether an input of ``channels`` runs band by band through this model
    (:mod:`tilewave.models.bandwise`): it does not take that many channels, but one or three."""
    return channels not in descriptor.channels and bool({1, 3} & set(descriptor.channels))


@runtime_checkable
class TileModel(Protocol):
    """A loaded model, ready to run on one device."""

    descriptor: ModelDescriptor

    def to(self, device: torch.device, half: bool = False) -> TileModel:
        """Move the model's weights to ``device`` (in half precision if asked and allowed)."""
        ...

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale a whole window with no neighbours: the reference, and ``halo``/``blend``."""
        ...

    def forward_tile(self, x: torch.Tensor, request: TileRequest) -> TileResult:
        """Upscale one tile of a raster-order wavefront (``context`` mode only)."""
        ...


class ImageModel:
    """Base for models without contexts (``halo`` and ``blend`` modes)."""

    descriptor: ModelDescriptor

    def to(self, device: torch.device, half: bool = False) -> ImageModel:
        return self

    def forward_image(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_tile(self, x: torch.Tensor, request: TileRequest) -> TileResult:
        raise NotImplementedError(f"{self.descriptor.name} has no context mode")


def count_parameters(module: torch.nn.Module) -> int:
    """The number of weights in ``module`` (works on the ``meta`` device, without memory)."""
    return sum(p.numel() for p in module.parameters())
