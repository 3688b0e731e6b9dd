"""Inf-DiT's released checkpoint: a SwissArmyTransformer (SAT) folder, read with plain torch.

A SAT folder holds ``latest`` (the tag of the newest save, e.g. ``1000`` or ``release``),
``<tag>/mp_rank_00_model_states.pt`` (``{"module": state_dict, ...}``, written by
``torch.save``, possibly with DeepSpeed's bookkeeping beside it) and, usually,
``model_config.json`` (the model's arguments). The release as downloaded is the states
file alone; a folder that holds it directly is read as well.

Recognising and describing a folder reads no weights: the key names and shapes come
from the pickle inside the states file (a zip archive), unpickled by a reader that
builds nothing but shape records, so no code from the file runs and no storage is read.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ...errors import SettingsError, first_line
from .config import InfDiTConfig

if TYPE_CHECKING:
    import torch

STATES = "mp_rank_00_model_states.pt"
CONFIG = "model_config.json"
LATEST = "latest"
#: Prefixes of the optional CLIP image tower some saves carry (the training model holds
#: OpenCLIP's ViT-L/14 as ``image_encoder.model``; its visual tower is what is used).
CLIP_PREFIX = "image_encoder.model."
#: Keys only an Inf-DiT network has.
MARKERS = ("mixins.adaln_layer.re_pos_embed", "mixins.adaln_layer.lr_key_position_embedding",
           "mixins.patch_embed.proj.weight")
#: The model arguments (as ``model_config.json`` names them) -> config fields.
_ARGS = {"num_layers": "layers", "hidden_size": "hidden", "num_attention_heads": "heads",
         "patch_size": "patch", "in_channels": "in_channels", "out_channels": "out_channels",
         "image_block_size": "block_px", "image_size": "image_size", "sr_scale": "scale",
         "vector_dim": "vector_dim", "max_sequence_length": "max_sequence_length",
         "random_position": "random_position", "layernorm_epsilon": "eps"}
#: Settings of the released network this implementation is written for: another value
#: is another architecture.
_REQUIRED = {"input_time": "adaln", "nogate": True, "cross_adaln": False, "qk_ln": True,
             "re_position": True, "cross_lr": True, "image_condition": True,
             "ddpm_time_emb": False, "reg_token_num": 0, "label_dim": 0, "augment_dim": 0,
             "is_decoder": False, "layernorm_order": "pre", "random_position": True}


def _refuse(folder: str, why: str) -> SettingsError:
    return SettingsError(f"Inf-DiT checkpoint {folder!r}: {why}")


#: Where an OpenCLIP weights file may lie, relative to the checkpoint folder.
CLIP_FILES = ("clip/open_clip_model.safetensors", "clip/open_clip_pytorch_model.bin")


def missing_message(folder: str) -> str:
    """The one line saying that no CLIP image tower is there, and how to provide one."""
    return (f"Inf-DiT checkpoint {folder!r} needs OpenCLIP's ViT-L/14 image tower for its image "
            "embedding, and neither the checkpoint (image_encoder.model.visual.*) nor "
            f"{' or '.join(CLIP_FILES)} holds it: copy the weights file of "
            "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K into the folder's clip/")


def find_clip_file(folder: str) -> str | None:
    """The OpenCLIP weights file in ``folder``'s ``clip/``, if any."""
    for name in CLIP_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


# --- Reading key names and shapes without loading weights -------------------------------


@dataclass(frozen=True)
class _Shape:
    """What the shape reader builds in place of a tensor."""

    shape: tuple[int, ...]


class _Inert:
    """Anything else a checkpoint pickles (DeepSpeed's bookkeeping, numpy random state):
    built as an empty object, never as the class the file names."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _rebuild_tensor(storage: Any, offset: int, size: Any, *rest: Any) -> _Shape:
    return _Shape(tuple(int(s) for s in size))


def _first(data: Any, *rest: Any) -> Any:
    return data


class _ShapeReader(pickle.Unpickler):
    """Unpickles a ``torch.save`` archive's ``data.pkl`` into shape records."""

    _KNOWN = {("collections", "OrderedDict"): OrderedDict,
              ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
              ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
              ("torch._utils", "_rebuild_parameter"): _first,
              ("torch._utils", "_rebuild_parameter_with_state"): _first,
              ("torch", "Size"): tuple}

    def find_class(self, module: str, name: str) -> Any:
        return self._KNOWN.get((module, name), _Inert)

    def persistent_load(self, pid: Any) -> Any:
        return None  # a storage: never read


def _network_dict(loaded: Any) -> dict[str, Any] | None:
    """The state dict inside what a states file holds: ``module``, or the file itself."""
    if isinstance(loaded, dict) and isinstance(loaded.get("module"), dict):
        return loaded["module"]
    if isinstance(loaded, dict) and all(isinstance(k, str) for k in loaded):
        return loaded
    return None


@functools.lru_cache(maxsize=8)
def _cached_shapes(path: str, mtime_ns: int, size: int) -> dict[str, tuple[int, ...]]:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(names) != 1:
            raise ValueError("not a torch.save archive")
        with archive.open(names[0]) as f:
            loaded = _ShapeReader(f).load()
    state = _network_dict(loaded)
    if state is None:
        raise ValueError("holds no state dict")
    return {k: v.shape for k, v in state.items() if isinstance(v, _Shape)}


def read_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape in the states file ``path``, without reading weights
    (cached by the file's version). Raises ``ValueError``/``OSError`` for other files."""
    if not zipfile.is_zipfile(path):
        raise ValueError("not a zip-format torch.save file")
    stat = os.stat(path)
    return _cached_shapes(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


# --- The folder ------------------------------------------------------------------------


def states_path(folder: str) -> str:
    """The states file of the SAT folder ``folder``: the one ``latest`` names, or one
    lying in the folder itself. One-line errors for what is missing."""
    latest = os.path.join(folder, LATEST)
    if os.path.isfile(latest):
        try:
            with open(latest, encoding="utf-8") as f:
                tag = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise _refuse(folder, f"{LATEST} cannot be read ({first_line(exc, 80)})") from None
        path = os.path.join(folder, tag, STATES)
        if not tag or os.sep in tag or not os.path.isfile(path):
            raise _refuse(folder, f"{LATEST} names the save {tag!r}, but {tag or '?'}/{STATES} is "
                                  "missing; copy the whole checkpoint folder")
        return path
    path = os.path.join(folder, STATES)
    if os.path.isfile(path):
        return path
    raise _refuse(folder, f"neither {LATEST} with <save>/{STATES} nor {STATES} is there; give "
                          "the folder the checkpoint was saved or unpacked to")


def _read_json(folder: str) -> dict[str, Any] | None:
    path = os.path.join(folder, CONFIG)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as exc:
        raise _refuse(folder, f"{CONFIG} cannot be read ({first_line(exc, 80)})") from None
    if not isinstance(value, dict):
        raise _refuse(folder, f"{CONFIG} is not a JSON object")
    return value


def config_from_args(folder: str, args: dict[str, Any] | None) -> InfDiTConfig:
    """The configuration ``model_config.json`` states (the release's where it says nothing);
    refused in one line for settings of another architecture."""
    args = args or {}
    if args.get("model_class", "DiffusionEngine") != "DiffusionEngine":
        raise _refuse(folder, f"{CONFIG} names the model {args['model_class']!r}, not Inf-DiT's "
                              "DiffusionEngine")
    for name, wanted in _REQUIRED.items():
        if name in args and args[name] != wanted:
            raise _refuse(folder, f"{CONFIG} sets {name}={args[name]!r}; tilewave runs the released "
                                  f"architecture only ({name}={wanted!r})")
    known = {f.name: f.type for f in fields(InfDiTConfig)}
    values = {_ARGS[k]: v for k, v in args.items() if k in _ARGS and _ARGS[k] in known}
    try:
        return InfDiTConfig(**values)
    except (TypeError, ValueError) as exc:
        raise _refuse(folder, f"{CONFIG} states an unusable configuration ({first_line(exc, 120)})") from None


def expected_shapes(cfg: InfDiTConfig) -> dict[str, tuple[int, ...]]:
    """The network's tensors, by their names in the release, with their shapes."""
    d, h, hd, p = cfg.hidden, cfg.heads, cfg.head_dim, cfg.patch
    t, lrb, r = cfg.tokens_per_side, cfg.lr_block, cfg.rope_size
    shapes: dict[str, tuple[int, ...]] = {"transformer.position_embeddings.weight": (cfg.max_sequence_length, d)}
    a = "mixins.adaln_layer."
    for i in range(cfg.layers):
        layer = f"transformer.layers.{i}."
        shapes |= {layer + "attention.query_key_value.weight": (3 * d, d),
                   layer + "attention.query_key_value.bias": (3 * d,),
                   layer + "attention.dense.weight": (d, d), layer + "attention.dense.bias": (d,),
                   layer + "mlp.dense_h_to_4h.weight": (4 * d, d), layer + "mlp.dense_h_to_4h.bias": (4 * d,),
                   layer + "mlp.dense_4h_to_h.weight": (d, 4 * d), layer + "mlp.dense_4h_to_h.bias": (d,)}
        for norm in ("q_layer_norm", "k_layer_norm"):
            shapes |= {f"{a}{norm}.{i}.weight": (hd,), f"{a}{norm}.{i}.bias": (hd,)}
        shapes |= {f"{a}adaLN_modulations.{i}.1.weight": (4 * d, d), f"{a}adaLN_modulations.{i}.1.bias": (4 * d,)}
    shapes |= {
        a + "rope.freqs_cos": (r, r, hd), a + "rope.freqs_sin": (r, r, hd),
        a + "re_pos_embed": (cfg.layers, 4, h, hd),
        a + "proj_lr.weight": (d, 3, cfg.lr_patch, cfg.lr_patch), a + "proj_lr.bias": (d,),
        a + "cross_attention.query.weight": (d, d), a + "cross_attention.query.bias": (d,),
        a + "cross_attention.key_value.weight": (2 * d, d), a + "cross_attention.key_value.bias": (2 * d,),
        a + "cross_attention.dense.weight": (d, d), a + "cross_attention.dense.bias": (d,),
        a + "post_cross_attention_layernorm.weight": (d,), a + "post_cross_attention_layernorm.bias": (d,),
        a + "lr_query_position_embedding": (1, t * t, h, hd),
        a + "lr_key_position_embedding": (1, (3 * lrb) ** 2, h, hd),
        a + "cross_q_ln.weight": (hd,), a + "cross_q_ln.bias": (hd,),
        a + "cross_k_ln.weight": (hd,), a + "cross_k_ln.bias": (hd,),
        "mixins.final_layer.linear.weight": (p * p * cfg.out_channels, d),
        "mixins.final_layer.linear.bias": (p * p * cfg.out_channels,),
        "mixins.final_layer.adaLN_modulation.1.weight": (2 * d, d),
        "mixins.final_layer.adaLN_modulation.1.bias": (2 * d,),
        "mixins.patch_embed.proj.weight": (d, cfg.in_channels, p, p),
        "mixins.patch_embed.proj.bias": (d,),
        "time_embed.mlp.0.weight": (d, cfg.time_channels), "time_embed.mlp.0.bias": (d,),
        "time_embed.mlp.2.weight": (d, d), "time_embed.mlp.2.bias": (d,),
        "cond_embed.map_vector.0.weight": (d, cfg.vector_dim), "cond_embed.map_vector.0.bias": (d,),
        "cond_embed.map_vector.2.weight": (d, d), "cond_embed.map_vector.2.bias": (d,),
    }
    return shapes


def check_layout(folder: str, shapes: dict[str, tuple[int, ...]], cfg: InfDiTConfig) -> None:
    """Refuse in one line unless the network's tensors are exactly the ones ``cfg`` makes
    (the CLIP tower, when saved along, is checked where it is read)."""
    expected = expected_shapes(cfg)
    network = {k: v for k, v in shapes.items() if not k.startswith(CLIP_PREFIX)}
    missing = sorted(set(expected) - set(network))
    if missing:
        raise _refuse(folder, f"{len(missing)} tensor(s) of the network are missing, e.g. {missing[0]!r}; "
                              "this is not a (complete) Inf-DiT save")
    extra = sorted(set(network) - set(expected))
    if extra:
        raise _refuse(folder, f"{len(extra)} tensor(s) Inf-DiT does not have, e.g. {extra[0]!r}; "
                              "this is another architecture")
    wrong = [k for k in expected if tuple(network[k]) != expected[k]]
    if wrong:
        k = wrong[0]
        raise _refuse(folder, f"{len(wrong)} tensor(s) have other shapes than {CONFIG} implies, e.g. "
                              f"{k!r} is {tuple(network[k])}, not {expected[k]}; fix {CONFIG}")


def infer_config(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """The arguments the tensor shapes imply, for a folder without ``model_config.json``."""
    qkv = shapes["transformer.layers.0.attention.query_key_value.weight"]
    re_pos = shapes["mixins.adaln_layer.re_pos_embed"]
    embed = shapes["mixins.patch_embed.proj.weight"]
    final = shapes["mixins.final_layer.linear.weight"]
    patch = embed[-1]
    tokens = math.isqrt(shapes["mixins.adaln_layer.lr_query_position_embedding"][1])
    lr_tokens = math.isqrt(shapes["mixins.adaln_layer.lr_key_position_embedding"][1]) // 3
    lr_patch = shapes["mixins.adaln_layer.proj_lr.weight"][-1]
    block_px = tokens * patch
    rope = shapes["mixins.adaln_layer.rope.freqs_cos"][0]
    return {"num_layers": re_pos[0], "hidden_size": qkv[1], "num_attention_heads": re_pos[2],
            "patch_size": patch, "in_channels": embed[1], "out_channels": final[0] // (patch * patch),
            "image_block_size": block_px, "sr_scale": max(1, block_px // (lr_tokens * lr_patch)),
            "image_size": rope * patch // 8,
            "vector_dim": shapes["cond_embed.map_vector.0.weight"][1],
            "max_sequence_length": shapes["transformer.position_embeddings.weight"][0]}


@dataclass(frozen=True)
class CheckpointFacts:
    """What a checked Inf-DiT folder holds, read without loading weights."""

    folder: str
    states: str
    config: InfDiTConfig
    parameters: int
    #: The save carries the CLIP image tower (``image_encoder.model.visual.*``).
    has_clip: bool

    @classmethod
    def read(cls, path: str) -> CheckpointFacts:
        """Check the folder ``path``: its files, configuration and tensor layout."""
        folder = os.path.abspath(path)
        if not os.path.isdir(folder):
            raise SettingsError(f"Inf-DiT checkpoint folder {path!r} does not exist; give the folder "
                                f"holding {LATEST} (or {STATES})")
        states = states_path(folder)
        try:
            shapes = read_shapes(states)
        except Exception as exc:  # zip, pickle and I/O errors of a damaged or foreign file
            raise _refuse(folder, f"{os.path.relpath(states, folder)} is not a readable torch.save "
                                  f"file ({first_line(exc, 100)}); copy it again") from None
        if not all(k in shapes for k in MARKERS):
            raise _refuse(folder, f"{os.path.relpath(states, folder)} holds no Inf-DiT network "
                                  f"(no {MARKERS[0]!r}); give an Inf-DiT checkpoint")
        args = _read_json(folder)
        if args is None:
            try:
                args = infer_config(shapes)
            except (KeyError, IndexError, ZeroDivisionError):
                args = {}
        cfg = config_from_args(folder, args)
        check_layout(folder, shapes, cfg)
        parameters = sum(math.prod(s) for k, s in shapes.items()
                         if not k.startswith(CLIP_PREFIX) and ".rope." not in k)
        has_clip = any(k.startswith(CLIP_PREFIX + "visual.") for k in shapes)
        return cls(folder, states, cfg, parameters, has_clip)


def is_infdit_folder(path: str) -> bool:
    """True if ``path`` is a folder holding an Inf-DiT SAT save (its config or its keys
    say so); reads a JSON file and, if need be, the states file's key names."""
    if not os.path.isdir(path):
        return False
    try:
        args = _read_json(path)
        if args is not None and args.get("model_class") == "DiffusionEngine" and "cross_lr" in args:
            return True
        shapes = read_shapes(states_path(os.path.abspath(path)))
    except Exception:  # not such a folder: whoever else is asked says why
        return False
    return all(k in shapes for k in MARKERS)


# --- Loading ---------------------------------------------------------------------------

#: Globals DeepSpeed's and SAT's bookkeeping beside the weights may pickle (a numpy random
#: state, an argument namespace); allowed as inert data when the weights-only reader
#: refuses them, and nothing else.
_BOOKKEEPING = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
                "numpy.ndarray", "numpy.dtype", "argparse.Namespace")


def _resolve(name: str) -> Any:
    import importlib

    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


def load_state(folder: str, states: str) -> dict[str, torch.Tensor]:
    """The state dict in ``states`` (memory-mapped), read with torch's weights-only reader."""
    import torch

    def load() -> Any:
        return torch.load(states, map_location="cpu", weights_only=True, mmap=True)

    try:
        try:
            loaded = load()
        except pickle.UnpicklingError:
            # DeepSpeed's save may carry numpy random states: allow exactly those kinds.
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(states)
            other = [g for g in unsafe if g not in _BOOKKEEPING and not g.startswith("numpy.dtypes.")]
            if other:
                raise _refuse(folder, f"refusing to load {os.path.basename(states)}: it references "
                                      f"Python objects beyond tensors ({', '.join(other[:3])})") from None
            allowed = [o for o in (_resolve(g) for g in unsafe) if o is not None]
            if "numpy.dtype" in unsafe:
                import numpy as np

                # A pickled dtype is built from its class: the plain numeric ones only.
                allowed += [type(np.dtype(c)) for c in np.typecodes["AllInteger"] + np.typecodes["AllFloat"]]
            with torch.serialization.safe_globals(allowed):
                loaded = load()
    except SettingsError:
        raise
    except Exception as exc:  # zip, pickle and I/O errors of a damaged file
        raise _refuse(folder, f"{os.path.basename(states)} cannot be loaded ({first_line(exc, 120)}); "
                              "copy it again") from None
    state = _network_dict(loaded)
    if state is None:
        raise _refuse(folder, f"{os.path.basename(states)} holds no state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
