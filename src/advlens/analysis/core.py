"""``SessionCore``: what every analysis over one store needs — the store, the model, a cache and id checks.

The per-system analyses (paper 001's image and neuron space today; pathways, profiles and datapaths
later) derive from this class and add their computations; :class:`advlens.analysis.Session` combines
them. Nothing here knows about a particular paper.

Ids a caller (a notebook or the web app's browser) hands in are checked here before any work: a pair
id indexes the store's successful pairs (0 … P−1, the order of ``store.pair_table()``), a neuron id
the analysed layer's channels (0 … K−1), a class id the model's classes (0 … C−1). A bad id raises
:class:`SelectionError` — never a silent wrap-around (``-1`` is refused, not read as the last one).
"""

from __future__ import annotations

import copy
import logging
import operator
import threading
from collections.abc import Callable, Hashable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from advlens.analysis.cache import BoundedCache
from advlens.errors import AdvlensError, ConfigError, ModelError, StoreError
from advlens.models import AnalysedModel, load_model
from advlens.models.fingerprint import model_fingerprint
from advlens.models.registry import BUILTINS
from advlens.store import AnalysisStore, open_store

if TYPE_CHECKING:
    from advlens.analysis.features import FeatureLibrary

logger = logging.getLogger(__name__)


class SelectionError(AdvlensError, IndexError):
    """An id (pair, neuron, class, dendrogram node) outside its range, or not an integer.

    An :class:`~advlens.errors.AdvlensError` (the app and the CLI report its message) and an
    ``IndexError`` (what Python code expects of a bad index).
    """


def check_id(value: Any, count: int, what: str) -> int:
    """``value`` as an int in ``0 … count−1``, else :class:`SelectionError` naming ``what`` and the range.

    Integral floats (``3.0``, as JSON may deliver them) are accepted; negative ids are refused.
    """
    try:
        index = operator.index(value)
    except TypeError:
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            index = int(value)
        else:
            raise SelectionError(f"{what} id must be an integer, got {value!r}") from None
    if not 0 <= index < count:
        valid = f"0 … {count - 1}" if count else "none: there are no items of this kind"
        raise SelectionError(f"{what} id {index} is out of range (valid: {valid})")
    return int(index)


def check_ids(values: Sequence[int] | np.ndarray, count: int, what: str) -> np.ndarray:
    """Many ids at once (see :func:`check_id`). Shape: returns int64 (n,), in the given order."""
    array = np.asarray(values)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1:
        array = array.reshape(-1)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        array = array.astype(np.int64)
    if array.dtype.kind not in "iub":
        raise SelectionError(f"{what} ids must be integers, got {array.dtype} values")
    array = array.astype(np.int64)
    bad = array[(array < 0) | (array >= count)]
    if bad.size:
        valid = f"0 … {count - 1}" if count else "none: there are no items of this kind"
        raise SelectionError(f"{what} ids {bad[:5].tolist()} are out of range (valid: {valid})")
    return array


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to compute on: ``device``, or ``cuda`` when available, else ``cpu``; an unknown or
    unavailable device raises :class:`~advlens.errors.ConfigError`."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from exc
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available on this machine; use 'cpu'")
    if target.type == "cuda" and target.index is not None and target.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"numbered 0 … {torch.cuda.device_count() - 1}")
    return target


def same_device(a: torch.device, b: torch.device) -> bool:
    """True when ``a`` and ``b`` name the same device (``cuda`` matches ``cuda:0`` … any index)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class SessionCore:
    """The store, the model and the cache of one analysis session, plus the id checks.

    Args:
        store: an opened store or its path (it must be complete).
        model: the model ``prepare`` used. Default: loaded from the store (its recorded spec and the
            weights the store carries) and checked against the stored weight fingerprint. A model
            passed here is checked against that fingerprint too, and is **never moved**: with
            ``device=None`` the session computes where the model lives; with another ``device``
            the session works on a copy moved there and leaves the caller's model alone.
        device: where forward passes run (default: the given model's device, else ``cuda`` when
            available, else ``cpu``).
        cache_size: number of cached results.
        trust_store_code: a store whose model spec is not built in (``module.path:factory``) names
            Python code; loading its model imports that module and runs the factory. That is refused
            unless ``trust_store_code=True`` (CLI: ``--trust-store-code``) or the model is passed in.

    Raises:
        StoreError: the store is unfinished, or the model's weights differ from the store's.
        ModelError: an untrusted store-named model spec.
        ConfigError: an unknown or unavailable device.
    """

    def __init__(self, store: AnalysisStore | str | Path, model: AnalysedModel | None = None, *,
                 device: str | torch.device | None = None, cache_size: int = 128,
                 trust_store_code: bool = False) -> None:
        self.store = store if isinstance(store, AnalysisStore) else open_store(store)
        if not self.store.complete:
            raise StoreError(
                f"the store at {self.store.root} is unfinished (finished: {', '.join(self.store.finished_stages)}); "
                "run the same `advlens prepare` command again to complete it"
            )
        self.trust_store_code = trust_store_code
        self._model_lock = threading.Lock()
        if model is not None:
            self._check_fingerprint(model, "the model passed to Session(model=...)")
            target = resolve_device(device) if device is not None else model.device
            if not same_device(target, model.device):
                logger.info("working on a copy of the given model on %s (the original stays on %s)", target,
                            model.device)
                model = copy.deepcopy(model).to(target)
            self.device = model.device
        else:
            self.device = resolve_device(device)
            self._check_spec_trusted()
        self._model = model
        self.cache = BoundedCache(cache_size)

    # ------------------------------------------------------------------ model
    @property
    def model_config(self) -> dict[str, Any]:
        """The model part of the store's configuration (spec, weights, fingerprint, layers, classes)."""
        return self.store.config["model"]

    def _check_spec_trusted(self) -> None:
        spec = self.model_config["spec"]
        if spec in BUILTINS or self.trust_store_code:
            return
        module = spec.partition(":")[0]
        raise ModelError(
            f"the store at {self.store.root} names the model {spec!r}, which is not built in: loading it imports "
            f"the Python module {module!r} and runs {spec!r}, i.e. runs code the store points to. Pass "
            "trust_store_code=True (CLI: --trust-store-code) if you trust that code, or pass the model yourself "
            "with Session(store, model=...)"
        )

    def _check_fingerprint(self, model: AnalysedModel, what: str) -> None:
        if model_fingerprint(model) != self.model_config["sha256"]:
            raise StoreError(
                f"the weights of {what} ({self.model_config['spec']!r}) differ from those the store at "
                f"{self.store.root} was prepared with; pass the original model to Session(model=...) or re-run "
                "`advlens prepare`"
            )

    def _weights_path(self) -> Path | None:
        """Weights to load: the store's own copy, checked against its digest (None: the built-in spec's
        shipped weights)."""
        return self.store.weights_path()

    @property
    def model(self) -> AnalysedModel:
        """The model of the store, on :attr:`device` (loaded and checked on first use)."""
        with self._model_lock:
            if self._model is None:
                config = self.model_config
                model = load_model(config["spec"], self._weights_path(), class_names=config["class_names"],
                                   input_shape=tuple(config["input_shape"]), analysed_layer=config["analysed_layer"],
                                   dense_layer=config["dense_layer"])
                self._check_fingerprint(model, f"model {config['spec']!r} as loaded")
                self._model = model.to(self.device)
            return self._model

    # ------------------------------------------------------------------ store-level facts
    @property
    def class_names(self) -> list[str]:
        return self.store.class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @cached_property
    def table(self) -> dict[str, np.ndarray]:
        """Per pair: dataset_index, label, benign_pred, adv_pred, benign_probs, adv_probs, l2, linf."""
        return self.store.pair_table()

    @property
    def num_pairs(self) -> int:
        return int(len(self.table["pair"]))

    @cached_property
    def num_neurons(self) -> int:
        """Neurons (channels) of the analysed layer: valid neuron ids are 0 … K−1."""
        return int(self.store.array("activations", "benign_maps").shape[1])

    def pair_info(self, pair: int) -> dict:
        """Labels, probabilities and perturbation sizes of one pair."""
        pair = self.check_pair(pair)
        t = self.table
        label, adv = int(t["label"][pair]), int(t["adv_pred"][pair])
        return {"pair": pair, "dataset_index": int(t["dataset_index"][pair]), "label": label, "adv_pred": adv,
                "label_name": self.class_names[label], "adv_name": self.class_names[adv],
                "benign_prob": float(t["benign_probs"][pair, label]), "adv_prob": float(t["adv_probs"][pair, adv]),
                "benign_probs": t["benign_probs"][pair].copy(), "adv_probs": t["adv_probs"][pair].copy(),
                "l2": float(t["l2"][pair]), "linf": float(t["linf"][pair])}

    def pair_images(self, pairs: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Benign and adversarial images. Shape: two (len(pairs), C, H, W) float32 in [0, 1]."""
        return self.store.pair_images(self.check_pairs(pairs))

    @cached_property
    def features(self) -> FeatureLibrary:
        """The store's feature visualisations, dataset examples and channel statistics (the ``features`` stage).

        Raises:
            StoreError: the store has no ``features`` stage; the message names the
                ``advlens prepare ... --stages features`` command that adds it.
        """
        from advlens.analysis.features import FeatureLibrary

        return FeatureLibrary(self.store)

    def _no_true_positive(self, label: int, where: str) -> str:
        """Why ``where`` holds no benign true positive of class ``label``, and what to do: the examined images
        hold none of that class (a 1,000-class model on a few photos), or the model misclassifies every one."""
        examined = int(self._cached(("examined-class-counts",), lambda: np.bincount(
            np.asarray(self.store.load("predict", "label"), dtype=np.int64), minlength=self.num_classes))[label])
        name = f"class {label} ({self.class_names[label]})"
        if not examined:
            return (f"{where} holds no image of {name}: the examined images have none of that class. Add images "
                    f"of it (e.g. a folder for it with --dataset imagenet-folder), or prepare a targeted attack "
                    f"towards a class the images have (--targeted --target-class N)")
        return (f"{where} holds no benign true positive of {name}: the model misclassifies all {examined} "
                f"examined images of it")

    # ------------------------------------------------------------------ id checks
    def check_pair(self, pair: Any) -> int:
        """A pair id in 0 … P−1, else :class:`SelectionError`."""
        return check_id(pair, self.num_pairs, "pair")

    def check_pairs(self, pairs: Sequence[int] | np.ndarray) -> np.ndarray:
        """Pair ids in 0 … P−1 (int64, given order), else :class:`SelectionError`."""
        return check_ids(pairs, self.num_pairs, "pair")

    def check_neuron(self, neuron: Any) -> int:
        """A neuron id in 0 … K−1 (channels of the analysed layer), else :class:`SelectionError`."""
        return check_id(neuron, self.num_neurons, "neuron")

    def check_neurons(self, neurons: Sequence[int] | np.ndarray) -> np.ndarray:
        """Neuron ids in 0 … K−1 (int64, given order), else :class:`SelectionError`."""
        return check_ids(neurons, self.num_neurons, "neuron")

    def check_class(self, label: Any) -> int:
        """A class id in 0 … C−1, else :class:`SelectionError`."""
        return check_id(label, self.num_classes, "class")

    @staticmethod
    def check_node(node: Any, num_leaves: int) -> int:
        """A dendrogram node id of a hierarchy over ``num_leaves`` leaves: 0 … 2·num_leaves−2 (SciPy's
        numbering: leaves first, then merges), else :class:`SelectionError`."""
        return check_id(node, max(2 * num_leaves - 1, 0), "dendrogram node")

    # ------------------------------------------------------------------ cache
    def _cached(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        return self.cache.get_or_compute(key, compute)
