"""The base of the profiles analysis (spec-002): the stored stage, layer checks, a pair's full outputs.

:class:`ProfilesBase` is extended by :class:`~advlens.analysis.profiles_layer.ProfilesLayers` (the Layer
View) and :class:`~advlens.analysis.profiles.ProfilesAnalysis` (fits, profiles, the Flow View).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from advlens.analysis.core import SelectionError, SessionCore
from advlens.analysis.profiles_data import (
    STAGE,
    BackgroundActivations,
    ProfilesBackground,
    check_stage_layers,
    read_background,
)
from advlens.errors import ModelError

COLOUR_BY = ("pred", "true")


class ProfilesBase(SessionCore):
    """The profiles stage of the store, checks of layer selections, and the outputs of a pair's images."""

    # ------------------------------------------------------------------ the stage
    def has_profiles(self) -> bool:
        """Whether the store holds the ``profiles`` stage."""
        return self.store.has_stage(STAGE)

    def profiles_command(self) -> str:
        """The ``advlens prepare`` command that adds the profiles stage to this store."""
        return self.store.add_stages_command(STAGE)

    def profiles_background(self) -> ProfilesBackground:
        """The stored background, its labels and predictions, and the stage's fit (read once)."""
        def load() -> ProfilesBackground:
            background = read_background(self.store)
            check_stage_layers(self.store, background, self.model.graph)
            return background
        return self._cached(("profiles-background",), load)

    def profile_layers(self) -> list[str]:
        """The stage's axes (the default layer selection), in execution order."""
        return list(self.profiles_background().layers)

    def _background_activations(self) -> BackgroundActivations:
        return self._cached(("profiles-background-activations",),
                            lambda: BackgroundActivations(self.model, self.profiles_background().images))

    def background_activations(self, layers: Sequence[str]) -> list[np.ndarray]:
        """The background's full outputs of ``layers`` (captured once per layer, kept).

        Shape: one float32 (n, C, H, W) or (n, D) array per layer.
        """
        return self._background_activations()([self.check_profile_layer(name) for name in layers])

    # ------------------------------------------------------------------ checks
    def check_profile_layer(self, layer: Any) -> str:
        """A layer of the model graph (an alias gives its name), else :class:`SelectionError`."""
        graph = self.model.graph
        if not isinstance(layer, str) or layer not in graph:
            raise SelectionError(f"layer {str(layer)[:60]!r} is not a layer of this model; see model.graph.names()")
        return graph.resolve(layer)

    def check_profile_layers(self, layers: Sequence[str] | None) -> tuple[str, ...]:
        """A layer selection: the stage's layers for None, else two or more distinct layers in execution
        order, each feeding the next (G-23); :class:`SelectionError` otherwise."""
        if layers is None:
            return tuple(self.profile_layers())
        if isinstance(layers, str) or not isinstance(layers, Sequence):
            raise SelectionError(f"a layer selection is a list of layer names, got {str(layers)[:60]!r}")
        names = [self.check_profile_layer(name) for name in layers]
        if len(set(names)) != len(names):
            raise SelectionError(f"the layer selection names a layer twice: {', '.join(names)}")
        if len(names) < 2:
            raise SelectionError("a layer selection needs at least two layers (one axis each)")
        graph = self.model.graph
        ordered = graph.sort(names)
        try:
            graph.check_sequential(ordered)
        except ModelError as exc:
            raise SelectionError(str(exc)) from None
        return tuple(ordered)

    @staticmethod
    def _choice(value: Any, choices: Sequence[str], what: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise SelectionError(f"{what} {value!r} is not one of {', '.join(choices)}")
        return value

    def pair_outputs(self, pair: int, layers: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The benign and the adversarial image's full outputs of ``layers``.

        Shape: two lists with one float32 (C, H, W) or (D,) array per layer.
        """
        pair = self.check_pair(pair)
        names = tuple(self.check_profile_layer(name) for name in layers)

        def compute():
            benign, adversarial = self.pair_images([pair])
            images = torch.from_numpy(np.concatenate([benign, adversarial]))
            captured = self.model.capture(images, list(names), reduce="none")
            outputs = [np.ascontiguousarray(captured[name].numpy(), dtype=np.float32) for name in names]
            return [out[0] for out in outputs], [out[1] for out in outputs]
        return self._cached(("profiles-pair-outputs", pair, names), compute)

    def background_labels(self, colour_by: str = "pred") -> np.ndarray:
        """The background's predicted (``pred``) or true (``true``) labels. Shape: (n,) int64."""
        colour_by = self._choice(colour_by, COLOUR_BY, "colour by")
        background = self.profiles_background()
        return background.preds if colour_by == "pred" else background.labels
