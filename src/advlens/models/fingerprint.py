"""Fingerprints of tensors and models: what identifies the weights a store was prepared with."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 over the raw bytes of tensors (used to fingerprint data and weights)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the model's state dict (weights, buffers and normalization), in float32."""
    state = model.state_dict()
    return tensor_digest(*(state[k].float() for k in sorted(state)))
