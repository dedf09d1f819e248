"""Exceptions raised by advlens: each message names the problem and what to do about it."""

from __future__ import annotations


class AdvlensError(Exception):
    """Base class of every error advlens raises on bad input."""


class DatasetError(AdvlensError):
    """A dataset file is missing, corrupt or of an unknown format."""


class ModelError(AdvlensError):
    """A model spec is unknown, weights do not match, or the model does not fit the data."""


class AttackError(AdvlensError):
    """Attack parameters or externally supplied adversarial images are invalid."""


class ConfigError(AdvlensError):
    """A parameter is out of range or unusable on this machine (e.g. ``--device cuda`` without CUDA)."""


class StoreError(AdvlensError):
    """An analysis store is missing, incomplete, damaged, locked, of another schema version or configuration."""
