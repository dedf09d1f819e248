"""Loading weights safely: safetensors, or a state dict through ``torch.load(weights_only=True)``."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from advlens.errors import ModelError

logger = logging.getLogger(__name__)
_PREFIXES = ("module.", "model.", "net.")


def read_state_dict(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a PyTorch checkpoint.

    PyTorch checkpoints are loaded with ``weights_only=True``; a checkpoint that wraps the state dict
    in ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped. ``trust_pickle=True`` allows full
    unpickling and must only be used for files you trust.
    """
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"weights file {file} does not exist")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(file))
        except Exception as exc:
            raise ModelError(f"cannot read safetensors file {file}: {exc}") from exc
    try:
        state = torch.load(file, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        raise ModelError(
            f"cannot load {file} with torch.load(weights_only=True): {exc}. Save a plain state dict "
            "(torch.save(model.state_dict(), path)) or safetensors; pass trust_pickle=True / --trust-pickle "
            "only for a file you trust"
        ) from exc
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{file} does not hold a state dict of tensors")
    return state


def _strip_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state) and not set(state) & expected:
            return {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(module: nn.Module, path: str | Path, trust_pickle: bool = False) -> None:
    """Load weights into ``module`` strictly; mismatched keys or shapes raise ModelError listing them."""
    expected = module.state_dict()
    state = _strip_prefix(read_state_dict(path, trust_pickle), set(expected))
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected) if state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong_shape:
        def show(items: list[str]) -> str:
            return ", ".join(items[:20]) + (f" … ({len(items)} in all)" if len(items) > 20 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if wrong_shape:
            parts.append(f"shape mismatches: {show(wrong_shape)}")
        raise ModelError(
            f"weights {path} do not match the model architecture ({'; '.join(parts)}); "
            "check that the model spec matches the checkpoint"
        )
    module.load_state_dict(state, strict=True)
    logger.info("loaded %d tensors from %s", len(state), path)
