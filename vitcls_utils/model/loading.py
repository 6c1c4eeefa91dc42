"""Loading a registry variant: building the timm model, finding and reading its weights
(exact shapes, ``weights_only=True`` or safetensors), and choosing the device.

Loading never mutates weights after the checkpoint is in and never ignores a key silently.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .. import _compat
from ..base.errors import VitclsError, WeightsError
from .layout import disable_fused_attn
from .registry import Variant, VariantLike, data_dir, get_variant

_compat.ensure_torchvision_ops()

import timm  # noqa: E402  (after the torchvision shim)
import torch  # noqa: E402
from torch import nn  # noqa: E402

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------
# Model construction
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedInfo:
    """What was loaded: kept on the model as ``model.vitcls_info`` for manifests."""

    variant: Variant
    weights_id: str


def loaded_info(model: nn.Module) -> LoadedInfo:
    """``model.vitcls_info``: the variant and weights a model was loaded with, or an error
    saying that analyses which read them need a model from :func:`load_variant`."""
    info = getattr(model, "vitcls_info", None)
    if info is None:
        raise VitclsError("this needs a model from vitcls_utils.load_variant (it reads the "
                          "variant's preprocessing and weights id from model.vitcls_info)")
    return info


def build_model(variant: Variant, seed: int = 0, **overrides: Any) -> nn.Module:
    """The variant's architecture with timm's default init under ``seed`` (no download).

    ``overrides`` are extra ``timm.create_model`` arguments that do not change the weights'
    shapes (e.g. ``drop_path_rate`` for training).
    """
    timm.layers.set_fused_attn(False)  # catalogue §2: before creation, so no module starts fused
    # The pinned tag selects the pretrained config and num_classes is explicit: an arch's default
    # tag can carry another head (vit_base_patch16_224_miil defaults to 11221 in21k classes).
    kwargs = {"num_classes": variant.num_classes, **dict(variant.model_kwargs), **overrides}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(variant.timm_name, pretrained=False, **kwargs)
    return disable_fused_attn(model)


def load_variant(
    key: VariantLike,
    pretrained: bool = True,
    weights: Optional[PathLike] = None,
    device: Union[str, torch.device] = "cpu",
    seed: int = 0,
) -> nn.Module:
    """Load a registry variant in eval mode with explicit (not fused) attention.

    Args:
        key: registry key or row (:func:`~vitcls_utils.model.registry.get_variant`);
            ``*_random`` keys are always random-init.
        pretrained: load the variant's published weights (ignored for ``*_random``).
        weights: a checkpoint file (safetensors or a torch state dict) used instead of the
            published weights; works for every variant.
        device: "cpu", "cuda", "auto", or a torch device.
        seed: seed of the random init (controls, and the start point before loading weights).

    Returns:
        The timm model, with ``model.vitcls_info`` naming the variant and the weights used.

    Raises:
        UnknownVariantError: ``key`` is not registered.
        WeightsError: the weights cannot be had offline, the file is missing or unreadable, or
            its keys or shapes do not fit the architecture.
    """
    variant = get_variant(key)
    path, weights_id = _resolve_weights(variant, pretrained, weights, seed)
    model = build_model(variant, seed=seed)
    if path is not None:
        _load_checkpoint(model, variant, path)
    model.eval().requires_grad_(False)
    model.vitcls_info = LoadedInfo(variant=variant, weights_id=weights_id)
    return model.to(resolve_device(device))


def _resolve_weights(variant: Variant, pretrained: bool, weights: Optional[PathLike],
                     seed: int) -> Tuple[Optional[Path], str]:
    """(checkpoint file or None for a random init, weights id), found before building so that
    a missing file fails at once."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"checkpoint file not found: {path}")
        return path, f"file:{path.name}:sha256={_sha256(path)[:16]}"
    if variant.random or not pretrained:
        made = f"random-init:seed={seed}:timm={timm.__version__}"
        # a timm: key also records the full name.tag whose config built it (and its input size)
        return None, made + (f":{variant.timm_name}{_kwargs_id(variant)}"
                             if variant.family == "timm" else "")
    path, weights_id = _fetch_pretrained(variant)
    if variant.family == "timm" and "sha256=" not in weights_id:  # the weights' own hash
        weights_id += f":sha256={_sha256(path)[:16]}"
    return path, weights_id


def _kwargs_id(variant: Variant) -> str:
    return "".join(f":{k}={v}" for k, v in variant.model_kwargs)


def weights_identity(key: VariantLike, weights: Optional[PathLike] = None, seed: int = 0
                     ) -> Optional[str]:
    """The weights id that :func:`load_variant` would record, without loading anything; None
    for published or user-supplied weights that are not given (finding them may need the
    network or the user)."""
    variant = get_variant(key)
    if weights is None and not variant.random and variant.weights != "shipped":
        return None
    return _resolve_weights(variant, True, weights, seed)[1]


def resolve_device(device: Union[str, torch.device]) -> torch.device:
    """"auto" -> cuda when available, else cpu; a clear error for an unusable device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise VitclsError(f"{device!r} is not a device: use 'auto', 'cpu', 'cuda', 'cuda:N' "
                          "or 'mps'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VitclsError(f"device {device!r} was asked for but CUDA is not available here; "
                          "use device='cpu' or 'auto'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise VitclsError(f"device {device!r}: this machine has {torch.cuda.device_count()} "
                          "CUDA device(s), numbered from 0")
    return dev


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file safely: safetensors, or ``torch.load(weights_only=True)``.

    Nested checkpoints (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped, and a
    prefix that every key shares (``module.``, ``model.``) is stripped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # refused by weights_only: it would run code
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise WeightsError(
            f"refused to load {path}: unpickling it needs "
            f"{found.group(1) if found else 'objects other than tensors'}, and a checkpoint "
            "is only read without running code. If you trust where it came from, convert it "
            "once to safetensors and pass that file: python -c \"import torch, safetensors."
            "torch as s; s.save_file({k: v.contiguous() for k, v in torch.load('IN', "
            "weights_only=False)['state_dict'].items()}, 'OUT.safetensors')\" (drop "
            "['state_dict'] if the file holds the tensors directly)") from None
    except Exception as exc:  # truncated file, not a checkpoint at all
        raise WeightsError(
            f"cannot read {path} as a checkpoint ({type(exc).__name__}: {str(exc)[:200]}). "
            "Supply a .safetensors file or a torch state dict of tensors."
        ) from None
    for _ in range(3):
        if isinstance(state, Mapping) and not any(torch.is_tensor(v) for v in state.values()):
            inner = next((state[k] for k in ("state_dict", "model", "model_state_dict",
                                             "state_dict_ema") if k in state), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, Mapping) or not state:
        raise WeightsError(f"{path} holds no state dict of tensors")
    state = {k: v for k, v in state.items() if torch.is_tensor(v)}
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> List[str]:
    expected = model.state_dict()
    problems = [f"missing: {k}" for k in expected if k not in state]
    problems += [f"unexpected: {k}" for k in state if k not in expected]
    problems += [
        f"shape of {k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    return problems


def checkpoint_problems(key: VariantLike, path: PathLike) -> List[str]:
    """Why the checkpoint at ``path`` would not load into ``key`` (empty when it would), found
    without building real weights: what a run file is checked with before anything runs."""
    variant = get_variant(key)
    try:
        state = read_state_dict(path)
    except WeightsError as exc:
        return [str(exc)]
    if variant.drop_prefixes:
        state = {k: v for k, v in state.items() if not k.startswith(variant.drop_prefixes)}
    with torch.device("meta"):
        model = build_model(variant)
    return _fit(model, state)[1]


def _fit(model: nn.Module, state: Dict[str, torch.Tensor]
         ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """(state to load, problems). A checkpoint in another layout timm knows (JAX or DeiT
    exports) is renamed by timm's converter, but only when no tensor is resampled on the way:
    a checkpoint of another patch size or grid is refused, never interpolated."""
    problems = _mismatch(model, state)
    if not problems:
        return state, []
    try:
        from timm.models.vision_transformer import checkpoint_filter_fn

        converted = checkpoint_filter_fn(dict(state), model)
    except Exception:
        return state, problems
    resampled = [k for k, v in converted.items()
                 if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if resampled or _mismatch(model, converted):
        return state, problems
    return converted, []


def _load_checkpoint(model: nn.Module, variant: Variant, path: Path) -> None:
    """Load ``path`` strictly; the only keys ever dropped are the variant's ``drop_prefixes``."""
    state = read_state_dict(path)
    if variant.drop_prefixes:
        state = {k: v for k, v in state.items() if not k.startswith(variant.drop_prefixes)}
    state, problems = _fit(model, state)
    if problems:
        shown = "; ".join(problems[:6]) + (f"; ... ({len(problems)} in all)"
                                          if len(problems) > 6 else "")
        raise WeightsError(
            f"checkpoint {path} does not fit {variant.key} ({variant.arch}): {shown}. "
            f"Expected weights: {variant.weights_hint or variant.timm_name}."
        )
    model.load_state_dict(state, strict=True)


def _check_toy_generator(path: Path) -> None:
    """Refuse a toy checkpoint trained on another version of the toy generator: its numbers
    would be silently wrong on the images generated now."""
    from safetensors import safe_open

    from ..datasets.toy import GENERATOR_VERSION

    with safe_open(str(path), "pt") as f:
        trained_on = (f.metadata() or {}).get("generator_version")
    if trained_on != str(GENERATOR_VERSION):
        raise WeightsError(
            f"{path} was trained on toy generator version {trained_on}, but vitcls_utils/toy.py "
            f"generates version {GENERATOR_VERSION}: retrain it with `make toy-model`")


def _fetch_pretrained(variant: Variant) -> Tuple[Path, str]:
    """Find the published weights in the local caches, or download them if the network is up.

    Fails within about a second on a machine without internet, naming how to supply weights.
    """
    if variant.weights == "user":
        raise WeightsError(
            f"{variant.key} has no downloadable weights: it is {variant.weights_hint}. "
            "Download the checkpoint and pass weights=PATH (CLI: --weights PATH)."
        )
    if variant.weights == "shipped":
        assert variant.weights_url is not None
        local = data_dir() / variant.weights_url
        if not local.is_file():
            raise WeightsError(f"{local} is missing: the {variant.key} checkpoint is "
                               f"{variant.weights_hint}")
        if variant.dataset == "toy":
            _check_toy_generator(local)
        return local, f"shipped:{variant.weights_url}:sha256={_sha256(local)[:16]}"
    if variant.weights == "timm":
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(variant.timm_name)
        repo = cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else f"timm/{variant.timm_name}"
        for filename in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(repo, filename)
            if isinstance(cached, str):
                return Path(cached), f"hf:{repo}@{Path(cached).parent.name}/{filename}"
        _require_network(variant, _compat.hub_endpoint(), offline=_compat.hub_offline())
        try:
            local = hf_hub_download(repo, "model.safetensors")
        except Exception as exc:
            raise WeightsError(f"download of {repo} failed ({type(exc).__name__}: {exc})") from None
        return Path(local), f"hf:{repo}@{Path(local).parent.name}/model.safetensors"
    # variant.weights == "url"
    assert variant.weights_url is not None
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    local = hub_dir / variant.weights_url.rsplit("/", 1)[-1]
    if not local.is_file():
        _require_network(variant, variant.weights_url, offline=False)
        hub_dir.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(variant.weights_url, str(local), progress=True)
    return local, f"url:{local.name}:sha256={_sha256(local)[:16]}"


def _require_network(variant: Variant, url: str, offline: bool) -> None:
    if offline or not _compat.host_reachable(url, timeout=1.0):
        why = "HF_HUB_OFFLINE is set" if offline else f"{url.split('/')[2]} is not reachable"
        raise WeightsError(
            f"pretrained weights for {variant.key} are not in the local cache and {why}. "
            f"They are: {variant.weights_hint}. Either pass a checkpoint you have, "
            f"weights=PATH (CLI: --weights PATH), run once on a machine with internet to fill "
            f"the cache, or use pretrained=False / the {variant.random_key} control."
        )
