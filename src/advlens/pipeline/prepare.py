"""``prepare``: run the stages into an analysis store, resuming after an interruption."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch

from advlens.data import ImageDataset, load_dataset
from advlens.errors import ModelError
from advlens.models import AnalysedModel, load_model
from advlens.pipeline import stages
from advlens.pipeline.config import PrepareConfig, store_config
from advlens.store import STAGES, AnalysisStore, StoreWriter, open_store

logger = logging.getLogger(__name__)


def check_compatible(model: AnalysedModel, data: ImageDataset) -> None:
    """Refuse a model and dataset whose image shapes or class counts disagree."""
    if tuple(data.image_shape) != tuple(model.input_shape):
        raise ModelError(
            f"the model {model.spec!r} takes images of shape {model.input_shape} but the dataset {data.name!r} "
            f"has {data.image_shape}: pick the model trained on this dataset"
        )
    if model.num_classes != data.num_classes:
        raise ModelError(
            f"the model {model.spec!r} predicts {model.num_classes} classes but the dataset {data.name!r} has "
            f"{data.num_classes}: the model does not match the dataset"
        )


def prepare(config: PrepareConfig, out: str | Path, overwrite: bool = False,
            model: AnalysedModel | None = None, data: ImageDataset | None = None) -> AnalysisStore:
    """Run every unfinished stage of ``config`` into the store at ``out`` and return it opened.

    A store holding finished stages of the same configuration is resumed; one of another
    configuration is refused unless ``overwrite``.
    """
    torch.manual_seed(config.seed)
    if data is None:
        data = load_dataset(config.dataset, config.split, config.data_dir)
    if model is None:
        model = load_model(config.model, config.weights, class_names=data.class_names,
                           input_shape=tuple(data.image_shape), analysed_layer=config.analysed_layer,
                           device=config.device)
    model = model.to(config.device)
    check_compatible(model, data)
    if config.limit is not None:
        data = ImageDataset(data.images[:config.limit], data.labels[:config.limit], data.class_names,
                            data.name, data.split)
    attack_extra = {}
    if config.attack == "file" and config.adversarial_file:
        from advlens.attacks import PrecomputedAttack

        attack_extra = {"sha256": PrecomputedAttack(config.adversarial_file, model.input_shape).digest}
    writer = StoreWriter(out, store_config(config, model, data, attack_extra), overwrite=overwrite)
    context = stages.StageContext(config, model, data, lambda: open_store(out), Path(out))
    for name in STAGES:
        if writer.finished(name):
            logger.info("stage %s: already finished, skipped", name)
            continue
        started = time.perf_counter()
        with writer.stage(name) as stage_out:
            stages.STAGE_FUNCTIONS[name](context, stage_out)
        for work in Path(out).glob(f".work-{name}-*"):
            shutil.rmtree(work)
        logger.info("stage %s: finished in %.1f s", name, time.perf_counter() - started)
    return open_store(out)
