"""What ``prepare`` is asked to do, and the fingerprint that identifies its store."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from advlens.data import ImageDataset
from advlens.models import AnalysedModel
from advlens.models.fingerprint import model_fingerprint, tensor_digest


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
    device: str = "cpu"
    tsne_perplexity: float = 30.0
    extra: dict[str, Any] = field(default_factory=dict)

    def attack_config(self) -> dict[str, Any]:
        """The attack part of the store fingerprint."""
        if self.attack == "pgd":
            return {"name": "pgd", "eps": self.eps, "alpha": self.alpha, "steps": self.steps, "norm": self.norm,
                    "targeted": self.targeted, "target_class": self.target_class,
                    "random_start": self.random_start, "seed": self.seed}
        if self.attack == "fgsm":
            return {"name": "fgsm", "eps": self.eps, "targeted": self.targeted, "target_class": self.target_class}
        return {"name": "file", "path": str(Path(self.adversarial_file).resolve()) if self.adversarial_file else None}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def store_config(config: PrepareConfig, model: AnalysedModel, data: ImageDataset,
                 attack_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The configuration recorded in (and identifying) the store."""
    return {
        "model": {"spec": config.model, "weights": str(Path(config.weights).resolve()) if config.weights else None, "sha256": model_fingerprint(model),
                  "analysed_layer": model.analysed_layer_name, "dense_layer": model.dense_layer_name,
                  "class_names": list(model.class_names), "input_shape": list(model.input_shape)},
        "dataset": {"name": data.name, "split": data.split, "size": len(data), "limit": config.limit,
                    "sha256": tensor_digest(data.images, data.labels)},
        "attack": {**config.attack_config(), **(attack_extra or {})},
        "seed": config.seed,
        "tsne": {"perplexity": config.tsne_perplexity},
    }
