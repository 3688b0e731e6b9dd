"""User weights: any super-resolution architecture spandrel recognises, loaded safely.

Reading, detecting and running are three steps:

1. **Read** the file into a state dict without executing anything from it:
   ``.safetensors`` through safetensors; ``.pth``/``.pt``/``.ckpt``/``.bin`` through
   ``torch.load(weights_only=True)``, which refuses pickles that reference anything but
   tensors and plain containers. TorchScript archives (code, not weights) are refused.
2. **Detect** the architecture from the state dict's keys and shapes with spandrel.
   Only single-image models whose input and output channels agree (1 or 3) are
   accepted: inpainting, face restoration and colourisation models are refused.
3. **Run** it as an :class:`~tilewave.models.rgb_net.RGBNetModel` in ``blend`` mode by
   default, since an arbitrary architecture's receptive field is not known; ``--mode halo``
   needs ``--halo N``, measured with ``tilewave.models.receptive_field``. Architectures
   that spandrel says must see the whole image at once are refused.

spandrel imports torchvision for two architectures (LaMa, RestoreFormer) that tilewave
refuses anyway. Where torchvision is missing or cannot load beside the installed torch
(a CUDA torchvision next to a CPU torch), spandrel is imported with those two imports
answered by placeholders that raise if ever called, and torchvision is left untouched in
``sys.modules`` for anyone else.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import pickle
import re
import sys
import types
import zipfile
from typing import TYPE_CHECKING, Any

from ..errors import SettingsError
from .base import ModelDescriptor, SizeRequirements, count_parameters
from .entry import ModelEntry, file_entry_for

# Telling a weights path from a model name must not import torch; loading one does.
if TYPE_CHECKING:
    from .rgb_net import RGBNetModel

EXTENSIONS = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
#: Overlap and halo used for user models, whose receptive field is unknown.
DEFAULT_HALO = 32
_ACCEPTED_PURPOSES = ("SR", "Restoration")


def is_weights_path(name: str) -> bool:
    """True if ``name`` names a weights file rather than a registered model."""
    return name.lower().endswith(EXTENSIONS)


def _unavailable(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("torchvision cannot be loaded beside this torch build, and this "
                       "architecture needs it; install a torchvision that matches torch")


def _import_spandrel() -> types.ModuleType:
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    if importlib.util.find_spec("spandrel") is None:
        raise SettingsError("loading a weights file needs spandrel; install it with: "
                            "pip install spandrel")
    try:
        import torchvision  # noqa: F401  (spandrel imports it)
    except Exception:  # missing, or built for another torch (that raises RuntimeError)
        return _import_with_torchvision_placeholders()
    import spandrel

    return spandrel


def _import_with_torchvision_placeholders() -> types.ModuleType:
    saved = {k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith("torchvision.")}
    for key in saved:
        del sys.modules[key]
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    placeholders = {name: types.ModuleType(name) for name in names}
    functional = placeholders["torchvision.transforms.functional"]
    # The placeholders are bare modules given, on purpose, the attributes spandrel reads.
    functional.InterpolationMode = types.SimpleNamespace(  # type: ignore[attr-defined]
        BILINEAR="bilinear", NEAREST="nearest")
    functional.rotate = functional.normalize = _unavailable  # type: ignore[attr-defined]
    placeholders["torchvision"].transforms = placeholders["torchvision.transforms"]  # type: ignore[attr-defined]
    placeholders["torchvision.transforms"].functional = functional  # type: ignore[attr-defined]
    sys.modules.update(placeholders)
    try:
        import spandrel
    except Exception as exc:  # a spandrel release that needs more of torchvision
        raise SettingsError(
            f"spandrel {importlib.metadata.version('spandrel')} cannot be imported without a "
            f"working torchvision ({type(exc).__name__}: {_first_line(exc)}); install a "
            "torchvision that matches torch") from None
    finally:
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    return spandrel


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def read_state_dict(path: str) -> dict[str, Any]:
    """The tensors of a weights file, read without running any code from it."""
    import torch

    if not os.path.isfile(path):
        raise SettingsError(f"weights file {path!r} does not exist; check the path")
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as exc:  # safetensors raises its own error types
            raise SettingsError(f"{path} is not a readable safetensors file ({_first_line(exc)})") from None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any("/code/__torch__" in n for n in archive.namelist()):
                raise SettingsError(f"{path} is a TorchScript program, not weights; "
                                    "export its state_dict to .safetensors or .pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickling_reason(str(exc))
        if "GLOBAL" in reason:
            raise SettingsError(f"refusing to load {path}: it references Python objects beyond "
                                f"tensors ({reason[:120]}); convert it to .safetensors") from None
        raise SettingsError(f"{path} is not a readable PyTorch weights file ({reason[:120]})") from None
    except Exception as exc:
        raise SettingsError(f"{path} is not a readable PyTorch weights file "
                            f"({type(exc).__name__}: {_first_line(exc, 120)})") from None
    if not isinstance(state, dict):
        raise SettingsError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _unpickling_reason(message: str) -> str:
    """The one line of torch's weights-only refusal that says what it met."""
    match = re.search(r"WeightsUnpickler error:\s*(.+)", message)
    if match:
        return match.group(1).strip()
    return message.strip().splitlines()[0] if message.strip() else "unreadable pickle"


def _spandrel_descriptor(path: str) -> Any:
    spandrel = _import_spandrel()
    state = read_state_dict(path)
    try:
        loaded = spandrel.ModelLoader(device="cpu").load_from_state_dict(
            spandrel.canonicalize_state_dict(state))
    except spandrel.UnsupportedModelError:
        raise SettingsError(f"{path}: spandrel recognises no architecture in these weights; "
                            "see spandrel's list of supported architectures") from None
    except Exception as exc:
        raise SettingsError(f"{path}: the weights do not fit the architecture spandrel detected "
                            f"({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(loaded, spandrel.ImageModelDescriptor) or loaded.purpose not in _ACCEPTED_PURPOSES:
        raise SettingsError(f"{path} is a {loaded.architecture.name} {loaded.purpose} model; "
                            "tilewave runs single-image super-resolution and restoration models")
    if loaded.input_channels != loaded.output_channels or loaded.input_channels not in (1, 3):
        raise SettingsError(f"{path}: {loaded.architecture.name} maps {loaded.input_channels} to "
                            f"{loaded.output_channels} channels; tilewave needs 1->1 or 3->3")
    if loaded.tiling == spandrel.ModelTiling.INTERNAL:
        raise SettingsError(f"{path}: {loaded.architecture.name} must see the whole image at "
                            "once (spandrel: tiling is internal), so tilewave cannot tile it")
    return loaded


def _describe(path: str, loaded: Any, discouraged: bool) -> ModelDescriptor:
    req = loaded.size_requirements
    caution = "; spandrel discourages tiling it, keep tiles large" if discouraged else ""
    return ModelDescriptor(
        name=os.path.basename(path),
        scale=loaded.scale,
        modes=("blend", "halo"),
        halo=DEFAULT_HALO,
        halo_measured=False,
        channels=(1, 3, 4),
        supports_half=bool(loaded.supports_half),
        size=SizeRequirements(minimum=max(1, req.minimum), multiple_of=req.multiple_of,
                              square=req.square),
        weights=path,
        description=f"{loaded.architecture.name} x{loaded.scale} ({', '.join(loaded.tags)}), "
                    f"user weights via spandrel{caution}",
        parameters=count_parameters(loaded.model),
    )


def load(path: str) -> RGBNetModel:
    """The model in the weights file ``path``."""
    from .rgb_net import RGBNetModel

    spandrel = _import_spandrel()
    loaded = _spandrel_descriptor(path)
    desc = _describe(path, loaded, loaded.tiling == spandrel.ModelTiling.DISCOURAGED)
    return RGBNetModel(loaded.model, desc, call=loaded, net_channels=loaded.input_channels)


@functools.lru_cache(maxsize=8)
def _entry(path: str, mtime_ns: int, size: int) -> ModelEntry:
    desc = load(path).descriptor  # reads and checks the file once per version of it
    return ModelEntry(path, lambda _scale: load(path), scales=(desc.scale,),
                      default_scale=desc.scale, summary="user weights",
                      describe=lambda _scale: desc)


def file_entry(path: str) -> ModelEntry:
    """A registry entry for a weights file, checked (read and detected) now."""
    return file_entry_for(path, _entry)
