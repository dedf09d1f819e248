"""``prepare``: check everything, then run the stages into an analysis store, resuming after an interruption."""

from __future__ import annotations

import errno
import logging
import shutil
import time
from pathlib import Path

import torch

from advlens.data import ImageDataset, load_dataset
from advlens.errors import ModelError, StoreError
from advlens.models import AnalysedModel, load_model
from advlens.models.registry import BUILTINS
from advlens.pipeline import stages
from advlens.pipeline.config import PrepareConfig, store_config
from advlens.store import STAGES, AnalysisStore, StoreWriter, open_store

logger = logging.getLogger(__name__)
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


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


def _write_error(exc: OSError, out: Path) -> StoreError:
    """One line for a failed file operation, saying what to do (finished stages are kept)."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in _NO_SPACE:
        fix = "the disk is full: free some space"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"{out} is not writable: fix its permissions or choose another --out"
    else:
        fix = "fix the cause"
    return StoreError(f"writing the store at {out} failed: {exc.strerror or exc}{where}; {fix}, then run the same "
                      "command again (finished stages are kept, the unfinished one was removed)")


def prepare(config: PrepareConfig, out: str | Path, overwrite: bool = False,
            model: AnalysedModel | None = None, data: ImageDataset | None = None,
            redo: str | None = None) -> AnalysisStore:
    """Run every unfinished stage of ``config`` into the store at ``out`` and return it opened.

    Every parameter, the data, the model and the output folder are checked before anything is
    written. A store holding finished stages of the same configuration is resumed; one of another
    configuration is refused unless ``overwrite``. ``redo`` computes a stage again, with the stages
    after it. The model's weights are copied into the store (``model.safetensors``), so the store
    serves from any folder.
    """
    config.validate()
    out = Path(out)
    torch.manual_seed(config.seed)
    if data is None:
        data = load_dataset(config.dataset, config.split, config.data_dir)
    if model is None:
        model = load_model(config.model, config.weights, class_names=data.class_names,
                           input_shape=tuple(data.image_shape), analysed_layer=config.analysed_layer,
                           trust_pickle=config.trust_pickle, device=config.device)
    model = model.to(config.device)
    check_compatible(model, data)
    config.validate_for(model)
    if config.limit is not None:
        data = ImageDataset(data.images[:config.limit], data.labels[:config.limit], data.class_names,
                            data.name, data.split)
    attack_extra = {}
    if config.attack == "file":
        from advlens.attacks import PrecomputedAttack

        attack_extra = {"sha256": PrecomputedAttack(config.adversarial_file, model.input_shape).digest}
    source = str(Path(config.weights).resolve()) if config.weights else (
        f"built-in {config.model}" if config.model in BUILTINS else f"{config.model} as constructed")
    try:
        with StoreWriter(out, store_config(config, model, data, attack_extra), overwrite=overwrite, redo=redo,
                         command=config.command_line()) as writer:
            writer.write_weights(model.net.state_dict(), source)
            context = stages.StageContext(config, model, data, lambda: open_store(out), out)
            for name in STAGES:
                if writer.finished(name):
                    logger.info("stage %s: already finished, skipped", name)
                    continue
                started = time.perf_counter()
                with writer.stage(name) as stage_out:
                    stages.STAGE_FUNCTIONS[name](context, stage_out)
                for work in out.glob(f".work-{name}-*"):
                    shutil.rmtree(work)
                logger.info("stage %s: finished in %.1f s", name, time.perf_counter() - started)
    except OSError as exc:
        raise _write_error(exc, out) from exc
    return open_store(out)
