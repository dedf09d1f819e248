"""What if the pinned pathway nodes were edited? (issue 13, item 3, on the Pathways page)

Bluff's pathways are class-level, so the edit is too: the pinned neurons — channels of several pathway layers —
are edited at all their layers at once (:func:`advlens.faithfulness.multi_layer.edit_layers`) in every attacked
image of the class pair at one attack and strength, and the result is summarised over those images::

    edit = session.edit_pathway(0, 6, "pgd", 8 / 255, [("layer3", 12), ("layer4", 40)], mode="restore")
    edit.mean_edited, edit.returned            # mean class probabilities, share of images back to class 0

The images: the sweep's sampled images of ``original`` that ``attack`` at that strength sends to ``target``
(the attacked(s) set of spec-004 §1), at most ``max_images`` of them drawn by the same seeded sample as the pathway
graph's influences (so with the page's ``max_images`` the edit and the graph's edges see the same images); the
adversarial image is the benign one plus the stored perturbation. Choices where the issue is vague:

- each pinned channel takes its map from the *unedited* pass of the other image (restore: benign; attack:
  adversarial), also when an upstream pinned channel was edited too (the patching convention, see
  :mod:`advlens.faithfulness.multi_layer`);
- the figures are means over images of each image's softmax (not the softmax of mean logits), and the fractions
  count images by their edited top-1 prediction: ``returned`` (predicts ``original`` again: what a restore or a
  zero in the adversarial pass hopes for) and ``flipped`` (predicts ``target``: what setting to adversarial or
  zeroing in the benign pass hopes for);
- the benign strength (ε = 0) has no attacked images: it is refused (the page asks for a strength instead).

The attacked set and the unedited maps of the edited layers are kept in the session's cache (:class:`SetMaps`:
the layers a set lacks are recorded in one forward pass, so pinning a node of a new layer records that layer only);
an edit then costs one forward pass of the set's images, every pinned layer edited in it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from advlens.analysis.core import SelectionError, SessionCore, check_id
from advlens.analysis.pathways_build import subsample
from advlens.errors import ConfigError
from advlens.faithfulness.multi_layer import LayersRecord, edit_layers, record_layers
from advlens.faithfulness.what_if import EDIT_MODES, EDITED_SIDE

DEFAULT_MAX_IMAGES = 64
"""Attacked images an edit runs on (the Pathways page's influence sets use the same number)."""


@dataclass(frozen=True)
class AttackedSet:
    """The attacked images of a class pair at one attack and strength (a seeded sample of them).

    Attributes:
        rows: positions in the sweep's sample; available: how many attacked images there are before sampling.

    Shape:
        rows: (n,) int64; benign, adversarial: (n, c, H, W) float32 pixels in [0, 1].
    """

    original: int
    target: int
    attack: str
    eps: float
    rows: np.ndarray
    available: int
    benign: torch.Tensor
    adversarial: torch.Tensor


@dataclass(frozen=True)
class PathwayEdit:
    """A class-level what-if edit of pinned pathway neurons, beside the unedited passes.

    Attributes:
        nodes: the edited ``(layer, channel)`` neurons, in the order given.
        side: the edited pass (``"adversarial"`` for restore and zero_adversarial, else ``"benign"``).
        available: attacked images of the class pair at this strength; the edit ran on ``len(rows)`` of them.

    Shape:
        rows: (n,) int64; benign, adversarial, edited: (n, num_classes) float32 softmax probabilities per image.
    """

    original: int
    target: int
    attack: str
    eps: float
    mode: str
    side: str
    nodes: tuple[tuple[str, int], ...]
    rows: np.ndarray
    available: int
    benign: np.ndarray
    adversarial: np.ndarray
    edited: np.ndarray

    @property
    def count(self) -> int:
        """Images the edit ran on."""
        return len(self.rows)

    @staticmethod
    def _mean(probabilities: np.ndarray) -> np.ndarray:
        return probabilities.mean(0) if len(probabilities) else np.full(probabilities.shape[1], np.nan)

    @property
    def mean_benign(self) -> np.ndarray:
        """Mean class probabilities of the unedited benign images. Shape: (num_classes,)."""
        return self._mean(self.benign)

    @property
    def mean_adversarial(self) -> np.ndarray:
        return self._mean(self.adversarial)

    @property
    def mean_edited(self) -> np.ndarray:
        return self._mean(self.edited)

    def _share(self, probabilities: np.ndarray, label: int) -> float:
        return float(np.mean(probabilities.argmax(1) == label)) if len(probabilities) else float("nan")

    @property
    def returned(self) -> float:
        """Share of images whose edited prediction is ``original`` (a restore's success)."""
        return self._share(self.edited, self.original)

    @property
    def flipped(self) -> float:
        """Share of images whose edited prediction is ``target`` (an attack edit's success)."""
        return self._share(self.edited, self.target)

    @property
    def unedited_returned(self) -> float:
        """Share of the unedited images of the edited side predicted ``original`` (the edit's starting point)."""
        return self._share(self.adversarial if self.side == "adversarial" else self.benign, self.original)

    @property
    def unedited_flipped(self) -> float:
        return self._share(self.adversarial if self.side == "adversarial" else self.benign, self.target)


def check_nodes(session: Any, nodes: Sequence) -> dict[str, list[int]]:
    """``[(layer, channel), …]`` → ``{layer: [channels]}`` (layers in order of first mention), each checked.

    Raises:
        SelectionError: not a list of ``(layer, channel)``, a layer the sweep does not cover, a channel out of
            range, a neuron named twice.
    """
    if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Sequence):
        raise SelectionError(f"pinned neurons must be a list of (layer, channel), got {str(nodes)[:60]!r}")
    channels = session.sweep_info().channels
    out: dict[str, list[int]] = {}
    for item in nodes:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise SelectionError(f"pinned neuron {str(item)[:40]!r} is not (layer, channel)")
        index = session.check_pathway_layer(item[0])
        channel = check_id(item[1], int(channels[index]), f"layer {item[0]!r} channel")
        if channel in out.setdefault(item[0], []):
            raise SelectionError(f"neuron {item[0]}:{channel} is pinned twice")
        out[item[0]].append(channel)
    return out


def _positive(value: Any, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{what} must be an integer ≥ {low}, got {value!r}")
    return int(value)


def attacked_set(session: Any, original: int, target: int, attack: str, eps: float,
                 max_images: int = DEFAULT_MAX_IMAGES, seed: int = 0, *, targeted: bool = False) -> AttackedSet:
    """The attacked images of ``original → target`` at ``attack`` and strength ``eps`` (cached in the session).

    Args:
        session: a session with the pathways analysis (:class:`~advlens.analysis.pathways.PathwayAnalysis`).
        eps: one of the sweep's strengths (pixel scale, e.g. ``8 / 255``).
        max_images: the most images kept (a seeded sample, the pathway graph's sample of this set).

    Raises:
        SelectionError: bad classes, attack or strength. ConfigError: a bad ``max_images`` or seed.
        StoreError: no sweep (the message names the command that adds it).
    """
    original, target = session._check_class_pair(original, target)
    attack = session.check_attack(attack)
    max_images, seed = _positive(max_images, "max_images", 1), _positive(seed, "seed", 0)
    sweep = session._sweep(original, target, targeted)
    if isinstance(eps, (int, float, np.integer, np.floating)) and not isinstance(eps, bool) and eps == 0:
        raise SelectionError("the benign pathways (strength 0) have no attacked images to edit; choose one of the "
                             f"sweep's strengths {', '.join(f'{e * 255:g}/255' for e in sweep.eps)}")
    strength = session._strength_index(sweep, eps)

    def compute() -> AttackedSet:
        a = sweep.attack_index(attack)
        mask = sweep.attacked_rows(original, target)[a, strength]
        found = np.flatnonzero(mask)
        rows = subsample(found, max_images, seed + 2 + strength)
        return AttackedSet(original, target, attack, float(sweep.eps[strength]), rows, len(found),
                           torch.from_numpy(sweep._benign_images(sweep.sample_index[rows])),  # sample rows
                           torch.from_numpy(sweep.attacked_images(a, strength, rows)))
    return session._cached(("pathway-what-if-set", original, target, attack, targeted, strength, max_images, seed),
                           compute)


class SetMaps:
    """The unedited passes of an attacked set and the maps of the layers edits have asked for so far.

    One per set in the session's cache; :meth:`covering` records the layers it lacks in one forward pass of the
    set (both images), so a page reload with pins at three layers costs one pass, and a pin at a new layer one more.
    Thread-safe (the app answers requests in parallel).
    """

    def __init__(self, images: AttackedSet) -> None:
        self.images = images
        self._lock = threading.Lock()
        self._record: LayersRecord | None = None

    def covering(self, model, layers: Sequence[str]) -> LayersRecord:
        """A record holding at least ``layers`` (graph names)."""
        with self._lock:
            held = self._record.layers if self._record is not None else ()
            missing = [layer for layer in layers if layer not in held]
            if missing or self._record is None:
                new = record_layers(model, self.images.benign, self.images.adversarial, missing or list(layers))
                old = self._record
                self._record = new if old is None else LayersRecord(
                    (*old.layers, *new.layers), old.benign, old.adversarial, {**old.benign_maps, **new.benign_maps},
                    {**old.adversarial_maps, **new.adversarial_maps})
            return self._record


def edit_pathway(session: Any, original: int, target: int, attack: str, eps: float,
                 nodes: Sequence[tuple[str, int]], mode: str = "restore", max_images: int = DEFAULT_MAX_IMAGES,
                 seed: int = 0, *, targeted: bool = False) -> PathwayEdit:
    """Edit the pinned ``nodes`` at all their layers at once in the attacked images of ``original → target``.

    Args:
        session: a session with the pathways analysis.
        eps: one of the sweep's strengths (not 0: the benign pathways have no attacked images).
        nodes: ``(layer, channel)`` neurons of the sweep's layers (the pathway graph's nodes, or any).
        mode: ``restore`` (benign maps in the adversarial pass), ``attack`` (adversarial maps in the benign pass),
            ``zero_adversarial`` or ``zero_benign`` (see :data:`~advlens.faithfulness.what_if.EDIT_MODES`).
        max_images, seed: the image sample (:func:`attacked_set`).

    Raises:
        SelectionError: bad classes, attack, strength, layer or channel; a neuron named twice.
        ConfigError: an unknown mode, a bad ``max_images``. StoreError: no sweep.

    Shape:
        see :class:`PathwayEdit`: per image (n, num_classes) probabilities; n = 0 when no image of the class
        pair is attacked at this strength (the means are then NaN).
    """
    if mode not in EDIT_MODES:
        raise ConfigError(f"edit mode {mode!r} is not one of {', '.join(map(repr, EDIT_MODES))}")
    original, target = session._check_class_pair(original, target)
    channels = check_nodes(session, nodes)
    images = attacked_set(session, original, target, attack, eps, max_images, seed, targeted=targeted)
    given = tuple((str(layer), int(channel)) for layer, channel in nodes)
    empty = np.zeros((0, session.num_classes), dtype=np.float32)
    if not len(images.rows):
        return PathwayEdit(original, target, images.attack, images.eps, mode, EDITED_SIDE[mode], given, images.rows,
                           0, empty, empty, empty)
    key = (original, target, images.attack, targeted, images.eps, max_images, seed)
    maps = session._cached(("pathway-what-if-maps", *key), lambda: SetMaps(images))
    record = maps.covering(session.model, [session.model.graph.resolve(layer) for layer in channels] or
                           [session.sweep_info().layers[-1]])
    edit = edit_layers(session.model, images.benign, images.adversarial, channels, mode, record=record)
    return PathwayEdit(original, target, images.attack, images.eps, mode, edit.side, given, images.rows,
                       images.available, edit.benign.probabilities.numpy(), edit.adversarial.probabilities.numpy(),
                       edit.edited.probabilities.numpy())


class PathwaysWhatIfAnalysis(SessionCore):
    """The pathways what-if part of a :class:`~advlens.analysis.Session` (it uses the session's
    :class:`~advlens.analysis.pathways.PathwayAnalysis` methods: mix it in beside them)."""

    def pathway_attacked_set(self, original: int, target: int, attack: str, eps: float,
                             max_images: int = DEFAULT_MAX_IMAGES, seed: int = 0, *,
                             targeted: bool = False) -> AttackedSet:
        """See :func:`attacked_set`."""
        return attacked_set(self, original, target, attack, eps, max_images, seed, targeted=targeted)

    def edit_pathway(self, original: int, target: int, attack: str, eps: float, nodes: Sequence[tuple[str, int]],
                     mode: str = "restore", max_images: int = DEFAULT_MAX_IMAGES, seed: int = 0, *,
                     targeted: bool = False) -> PathwayEdit:
        """See :func:`edit_pathway`."""
        return edit_pathway(self, original, target, attack, eps, nodes, mode, max_images, seed, targeted=targeted)


__all__ = ["PathwaysWhatIfAnalysis", "PathwayEdit", "AttackedSet", "attacked_set", "edit_pathway", "check_nodes",
           "DEFAULT_MAX_IMAGES"]
