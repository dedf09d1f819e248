"""``prepare``: check everything, then run the requested stages (and those they need) into an analysis store,
resuming after an interruption."""

from __future__ import annotations

import errno
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from advlens.data import ImageDataset, load_dataset
from advlens.errors import ModelError, StoreError
from advlens.models import AnalysedModel, load_model
from advlens.models.registry import BUILTINS
from advlens.pipeline import stages as stage_registry
from advlens.pipeline.config import PrepareConfig, store_config
from advlens.pipeline.executor import make_executor
from advlens.store import AnalysisStore, StoreWriter, open_store
from advlens.store.manifest import forget_stages

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
            redo: str | None = None, stages: Sequence[str] | None = None) -> AnalysisStore:
    """Run the requested stages of ``config`` (and those they need) into the store at ``out``; return it opened.

    Args:
        stages: stage names (see :data:`advlens.pipeline.stages.REGISTRY`); default: every default stage
            (paper 001's and the optional ones that are on by default, e.g. ``features``). The stages they
            require run first; finished stages are kept. The stage list is not part of the store's
            identity, so a stage can be added to a finished store later.
        redo: a stage to compute again, with the finished stages that depend on it (e.g. after
            ``advlens info --verify`` found it damaged).
        overwrite: replace a store of another configuration.
        model, data: given instead of loading ``config.model`` and ``config.dataset``.

    Every parameter, the stage names, the data, the model and the output folder are checked before
    anything is written. A store holding finished stages of the same configuration is resumed; one
    of another configuration is refused unless ``overwrite``. The model's weights are copied into
    the store (``model.safetensors``), so the store serves from any folder.
    """
    config.validate()
    executor = make_executor(config.executor, config.ray_address)  # Ray importable, address only with ray
    requested = stage_registry.plan(stages)  # checks the names before any work
    if redo is not None:
        stage_registry.check_names([redo], "--redo")
    out = Path(out)
    torch.manual_seed(config.seed)
    if data is None:
        data = load_dataset(config.dataset, config.split, config.data_dir, augment=config.augment, seed=config.seed)
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
        with StoreWriter(out, store_config(config, model, data, attack_extra), overwrite=overwrite,
                         command=config.command_line()) as writer:
            writer.write_weights(model.net.state_dict(), source)
            names = requested if redo is None else _forget_for_redo(writer, redo, requested)
            context = stage_registry.StageContext(config, model, data, lambda: open_store(out), out,
                                                  executor=executor)
            for name in names:
                _run_stage(writer, name, context)
    except OSError as exc:
        raise _write_error(exc, out) from exc
    return open_store(out)


def _forget_for_redo(writer: StoreWriter, redo: str, requested: list[str]) -> list[str]:
    """Drop ``redo`` and the finished stages that depend on it; the stages to run now (those included)."""
    dropped = forget_stages(writer.root, writer.manifest, [redo, *stage_registry.dependents(redo)])
    for name in {redo, *dropped}:  # checkpoints of an interrupted run are not reused either
        _remove_work(writer.root, name)
    logger.info("redoing stage(s) %s", ", ".join(dropped) or redo)
    return stage_registry.plan({*requested, redo, *dropped})


def _run_stage(writer: StoreWriter, name: str, context: stage_registry.StageContext) -> None:
    """Run stage ``name`` into the store unless it is finished (then say if its recorded settings differ)."""
    if writer.finished(name):
        logger.info("stage %s: already finished, skipped", name)
        outdated = stage_registry.REGISTRY[name].outdated
        note = outdated(writer.manifest["stages"][name].get("attrs", {}), context.config) if outdated else None
        if note:
            logger.warning("stage %s was computed with %s; `--redo %s` recomputes it", name, note, name)
        return
    started = time.perf_counter()
    with writer.stage(name) as stage_out:
        stage_registry.STAGE_FUNCTIONS[name](context, stage_out)
    _remove_work(writer.root, name)
    logger.info("stage %s: finished in %.1f s", name, time.perf_counter() - started)


def _remove_work(out: Path, stage: str) -> None:
    """Remove a stage's checkpoint folders (once it is committed, or before it is redone)."""
    for work in out.glob(f".work-{stage}-*"):
        shutil.rmtree(work)
