"""What ``prepare`` is asked to do, its checks, and the fingerprint that identifies its store."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from advlens.data import AUGMENTED, ImageDataset
from advlens.errors import AttackError, ConfigError
from advlens.models import AnalysedModel
from advlens.models.fingerprint import model_fingerprint, tensor_digest
from advlens.pipeline.sweep import (DEFAULT_GRADIENT_PRECISION, DEFAULT_PER_CLASS, DEFAULT_SWEEP_EPS,
                                   DEFAULT_SWEEP_STEPS, GRADIENT_PRECISIONS, SWEEP_ATTACKS)
from advlens.store import WEIGHTS_FILE

DEFAULT_PROFILES_BACKGROUND = 2000
"""Background images of the ``profiles`` stage (paper 002 §5.2: 2,000 in both case studies)."""
MIN_PROFILES_BACKGROUND = 3
"""The smallest background the aligned fit accepts: UMAP needs ``n_neighbors`` ≥ 2 and fewer neighbours than
images (the stage uses ``n_neighbors = min(15, n − 1)``)."""

ATTACKS = ("pgd", "fgsm", "file")
NORMS = ("linf", "l2")
MAX_SEED = 2**32 - 1  # NumPy and openTSNE take seeds below 2**32
DEFAULT_FEATURE_STEPS = 32
"""Feature-visualisation steps of the ``features`` stage (with Adam lr 0.1: ≥ 80% acceptance on the demo
model within the 3-minute goal, see benchmarks/features.py and benchmarks/features_stage.py)."""


def check_device(name: str | None) -> str:
    """The device to run on: ``name`` checked against this machine, or cuda when available, else cpu.

    Raises ConfigError for an unknown name or a device this machine does not have (``cuda`` without
    CUDA: torch would otherwise fail deep inside with an ``AssertionError``).
    """
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"--device {name!r} is not a device; use cpu or cuda (cuda:N for GPU N)") from exc
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"--device {name}: CUDA is not available on this machine ({why}); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name}: this machine has {count} CUDA device(s), numbered 0..{count - 1}")
        return str(device)
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {name}: Apple MPS is not available on this machine; use --device cpu")
        return "mps"
    raise ConfigError(f"--device {name}: advlens runs on cpu, cuda or mps")


@dataclass
class PrepareConfig:
    """Parameters of ``advlens prepare`` (see the CLI help for each)."""

    model: str = "fashion-resnet"
    weights: str | None = None
    analysed_layer: str | None = None
    dataset: str = "fashion-mnist"
    split: str = "test"
    data_dir: str | None = None
    limit: int | None = None
    augment: int = 0  # views per photo (photos, imagenet-folder): part of the data, so of the store's identity
    attack: str = "pgd"
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 7
    norm: str = "linf"
    targeted: bool = False
    target_class: int | None = None
    random_start: bool = False
    adversarial_file: str | None = None
    seed: int = 0
    batch_size: int = 128
    device: str | None = "cpu"  # None: cuda when available, else cpu (resolved by validate)
    tsne_perplexity: float = 30.0
    trust_pickle: bool = False
    feature_steps: int = DEFAULT_FEATURE_STEPS  # not part of the store's identity: recorded in the stage attrs
    # the sweep stage's settings (spec-004 §1), likewise recorded in its attrs only
    sweep_eps: tuple[float, ...] = DEFAULT_SWEEP_EPS
    sweep_attacks: tuple[str, ...] = SWEEP_ATTACKS
    sweep_per_class: int = DEFAULT_PER_CLASS
    sweep_steps: int = DEFAULT_SWEEP_STEPS
    sweep_precision: str = DEFAULT_GRADIENT_PRECISION
    # the profiles stage's settings (spec-002 §1.3), likewise recorded in its attrs only
    profiles_background: int = DEFAULT_PROFILES_BACKGROUND
    profiles_layers: tuple[str, ...] | str | None = None  # "a,b" or names; None: default_profile_layers(graph)
    # where the sharded stages run (not part of the store's identity: every executor writes the same arrays)
    executor: str = "local"
    ray_address: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Check every parameter that needs neither the model nor the data, before any work starts.

        Raises AttackError for attack parameters, ConfigError for the others (device included).
        """
        attack = []
        if self.attack not in ATTACKS:
            attack.append(f"unknown --attack {self.attack!r} (choose {', '.join(ATTACKS)})")
        if self.attack in ("pgd", "fgsm") and not (math.isfinite(self.eps) and self.eps > 0):
            attack.append(f"--eps must be a positive number, got {self.eps}")
        if self.attack == "pgd":
            if not (math.isfinite(self.alpha) and self.alpha > 0):
                attack.append(f"--alpha must be a positive number, got {self.alpha}")
            if not isinstance(self.steps, int) or self.steps < 1:
                attack.append(f"--steps must be at least 1, got {self.steps}")
            if self.norm not in NORMS:
                attack.append(f"unknown --norm {self.norm!r} (choose {', '.join(NORMS)})")
        if self.attack == "fgsm" and self.norm != "linf":
            attack.append("FGSM is an L∞ attack: --norm applies to pgd only")
        if self.attack == "file" and not self.adversarial_file:
            attack.append("--attack file needs --adversarial FILE.npz")
        if self.adversarial_file and self.attack != "file":
            attack.append("--adversarial FILE is used only with --attack file")
        if self.target_class is not None and not self.targeted:
            attack.append("--target-class needs --targeted")
        if self.target_class is not None and self.target_class < 0:
            attack.append(f"--target-class must be a class index ≥ 0, got {self.target_class}")
        if attack:
            raise AttackError("; ".join(attack))
        other = []
        if self.limit is not None and self.limit < 1:
            other.append(f"--limit must be at least 1, got {self.limit}")
        if self.batch_size < 1:
            other.append(f"--batch-size must be at least 1, got {self.batch_size}")
        if isinstance(self.augment, bool) or not isinstance(self.augment, int) or self.augment < 0:
            other.append(f"--augment must be 0 or more views per photo, got {self.augment}")
        elif self.augment and self.dataset not in AUGMENTED:
            other.append(f"--augment applies to the {' and '.join(AUGMENTED)} datasets, not {self.dataset!r}")
        if not 0 <= self.seed <= MAX_SEED:
            other.append(f"--seed must lie in 0..{MAX_SEED}, got {self.seed}")
        if isinstance(self.feature_steps, bool) or not isinstance(self.feature_steps, int) or self.feature_steps < 1:
            other.append(f"--feature-steps must be at least 1, got {self.feature_steps}")
        other += _sweep_problems(self)
        other += _profiles_problems(self)
        if not (math.isfinite(self.tsne_perplexity) and self.tsne_perplexity > 0):
            other.append(f"the t-SNE perplexity must be positive, got {self.tsne_perplexity}")
        if self.weights is not None and not Path(self.weights).is_file():
            other.append(f"--weights {self.weights} is not a file")
        if self.executor == "ray" and str(self.device) != "cpu":
            other.append(f"--executor ray runs its tasks on CPUs, not --device {self.device}: use --device cpu with "
                         "Ray, or the local executor for a GPU")
        if other:
            raise ConfigError("; ".join(other))
        self.device = check_device(self.device)

    def validate_for(self, model: AnalysedModel) -> None:
        """The checks that need the model: the target class must be one of its classes, the profiles
        layers must be layers of it, in an order where each feeds the next (ConfigError)."""
        if self.target_class is not None and self.target_class >= model.num_classes:
            raise AttackError(f"--target-class {self.target_class} is not a class of the model "
                              f"(classes 0..{model.num_classes - 1})")
        if self.profiles_layers is not None:
            from advlens.pipeline.stages_profiles import check_profile_layers  # noqa: PLC0415 - it imports this module

            self.profiles_layers = tuple(check_profile_layers(model.graph, self.profiles_layers,
                                                              "--profiles-layers"))

    def attack_config(self) -> dict[str, Any]:
        """The attack part of the store fingerprint."""
        if self.attack == "pgd":
            return {"name": "pgd", "eps": self.eps, "alpha": self.alpha, "steps": self.steps, "norm": self.norm,
                    "targeted": self.targeted, "target_class": self.target_class,
                    "random_start": self.random_start, "seed": self.seed}
        if self.attack == "fgsm":
            return {"name": "fgsm", "eps": self.eps, "targeted": self.targeted, "target_class": self.target_class}
        return {"name": "file", "path": str(Path(self.adversarial_file).resolve()) if self.adversarial_file else None}

    def command_line(self) -> list[str]:
        """The ``advlens prepare`` arguments (all but ``--out`` and ``--device``) that reproduce this config."""
        flags = {"model": "--model", "weights": "--weights", "analysed_layer": "--layer", "dataset": "--dataset",
                 "split": "--split", "data_dir": "--data-dir", "limit": "--limit", "augment": "--augment", "attack": "--attack",
                 "adversarial_file": "--adversarial", "eps": "--eps", "alpha": "--alpha", "steps": "--steps",
                 "norm": "--norm", "targeted": "--targeted", "target_class": "--target-class",
                 "random_start": "--random-start", "trust_pickle": "--trust-pickle", "seed": "--seed",
                 "batch_size": "--batch-size", "feature_steps": "--feature-steps", "sweep_eps": "--sweep-eps",
                 "sweep_attacks": "--sweep-attacks", "sweep_per_class": "--sweep-per-class",
                 "sweep_steps": "--sweep-steps", "sweep_precision": "--sweep-precision", "profiles_background": "--profiles-background",
                 "profiles_layers": "--profiles-layers"}
        paths = ("weights", "data_dir", "adversarial_file")
        defaults = PrepareConfig()
        args: list[str] = []
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name not in flags or value == getattr(defaults, item.name):
                continue
            if item.name == "dataset" and Path(value).exists():  # a dataset given as a file path
                value = str(Path(value).resolve())
            if isinstance(value, bool):
                args.append(flags[item.name])
            elif isinstance(value, (tuple, list)):  # --sweep-eps, --sweep-attacks, --profiles-layers: comma-separated
                args += [flags[item.name], ",".join(repr(v) if isinstance(v, float) else str(v) for v in value)]
            else:
                args += [flags[item.name], str(Path(value).resolve()) if item.name in paths else repr(value)
                         if isinstance(value, float) else str(value)]
        return args

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sweep_problems(config: PrepareConfig) -> list[str]:
    """What is wrong with the sweep stage's options, in the CLI's words (empty when nothing is)."""
    problems = []
    eps, attacks = list(config.sweep_eps), list(config.sweep_attacks)
    if not eps or not all(isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e) and 0 < e <= 1
                          for e in eps):
        problems.append(f"--sweep-eps must be strengths in (0, 1] such as 1/255,8/255, got "
                        f"{','.join(map(str, eps)) or '(none)'}")
    elif len(set(eps)) != len(eps):
        problems.append(f"--sweep-eps lists a strength twice: {','.join(map(str, eps))}")
    if not attacks or any(a not in SWEEP_ATTACKS for a in attacks) or len(set(attacks)) != len(attacks):
        problems.append(f"--sweep-attacks must name each of {', '.join(SWEEP_ATTACKS)} at most once, got "
                        f"{','.join(map(str, attacks)) or '(none)'}")
    if config.sweep_precision not in GRADIENT_PRECISIONS:
        problems.append(f"--sweep-precision must be one of {', '.join(GRADIENT_PRECISIONS)}, got "
                        f"{config.sweep_precision!r}")
    for flag, value in (("--sweep-steps", config.sweep_steps), ("--sweep-per-class", config.sweep_per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{flag} must be at least 1, got {value}")
    return problems


def _profiles_problems(config: PrepareConfig) -> list[str]:
    """What is wrong with the profiles stage's options that needs no model (empty when nothing is); a layer
    list given as ``"a,b"`` becomes a tuple. The names are checked against the model by
    :meth:`PrepareConfig.validate_for`."""
    problems = []
    n = config.profiles_background
    if isinstance(n, bool) or not isinstance(n, int) or n < MIN_PROFILES_BACKGROUND:
        problems.append(f"--profiles-background must be at least {MIN_PROFILES_BACKGROUND} images (UMAP needs 2 "
                        f"neighbours and more images than neighbours; paper 002 uses {DEFAULT_PROFILES_BACKGROUND}), "
                        f"got {n}")
    layers = config.profiles_layers
    if isinstance(layers, str):  # as the command line gives it
        layers = config.profiles_layers = tuple(name.strip() for name in layers.split(",") if name.strip())
    if layers is not None and (not isinstance(layers, (tuple, list)) or not layers
                               or not all(isinstance(name, str) and name for name in layers)):
        problems.append(f"--profiles-layers must list layer names such as layer1,layer2,fc, got {layers!r}")
    return problems


def store_config(config: PrepareConfig, model: AnalysedModel, data: ImageDataset,
                 attack_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The configuration recorded in (and identifying) the store.

    The weights are identified by the model's fingerprint; the store keeps its own copy, at the
    path ``weights`` relative to the store, so where they came from does not matter.
    """
    return {
        "model": {"spec": config.model, "weights": WEIGHTS_FILE, "sha256": model_fingerprint(model),
                  "analysed_layer": model.analysed_layer_name, "dense_layer": model.dense_layer_name,
                  "class_names": list(model.class_names), "input_shape": list(model.input_shape)},
        "dataset": {"name": data.name, "split": data.split, "size": len(data), "limit": config.limit,
                    "sha256": tensor_digest(data.images, data.labels)},
        "attack": {**config.attack_config(), **(attack_extra or {})},
        "seed": config.seed,
        "tsne": {"perplexity": config.tsne_perplexity},
    }
