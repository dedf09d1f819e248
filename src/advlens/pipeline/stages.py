"""The registry of ``prepare`` stages: every stage family's :class:`~advlens.pipeline.stage.Stage` records.

One module per stage family lists its stages (``stages_core``: paper 001's predict → attack →
activations → statistics → projections; ``stages_features``: feature visualisations, dataset
examples and channel statistics; ``stages_pathways``: the strength sweep of the pathways system;
``stages_profiles``: the aligned activation profiles). A later system adds a module, its records to
:data:`FAMILIES` and its stage names to :data:`advlens.store.STAGES` (the store accepts only names it knows).

``prepare`` runs the stages :func:`plan` gives: the requested ones (default: every ``default``
stage) plus the stages they require, in registry order, which puts every stage after those it needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from advlens.errors import ConfigError
from advlens.pipeline import stages_core, stages_features, stages_pathways, stages_profiles
from advlens.pipeline.stage import Stage, StageContext, StageFunction
from advlens.store import STAGES as STORE_STAGES

FAMILIES: tuple[tuple[Stage, ...], ...] = (stages_core.STAGES, stages_features.STAGES, stages_pathways.STAGES,
                                           stages_profiles.STAGES)


def _registry(families: Iterable[Sequence[Stage]]) -> dict[str, Stage]:
    """The stages by name, refusing duplicates and stages listed before a stage they require."""
    registry: dict[str, Stage] = {}
    for family in families:
        for stage in family:
            if stage.name in registry:
                raise RuntimeError(f"two prepare stages are named {stage.name!r}")
            missing = [r for r in stage.requires if r not in registry]
            if missing:
                raise RuntimeError(f"stage {stage.name!r} requires {missing}, which no earlier stage provides")
            registry[stage.name] = stage
    if tuple(registry) != STORE_STAGES:
        raise RuntimeError(f"the registered stages {tuple(registry)} differ from the names the store accepts "
                           f"{STORE_STAGES} (advlens.store.manifest.STAGES): list them in the same order")
    return registry


REGISTRY: dict[str, Stage] = _registry(FAMILIES)
"""Every stage by name, in an order where each stage follows those it requires."""

STAGE_FUNCTIONS: dict[str, StageFunction] = {name: stage.run for name, stage in REGISTRY.items()}
"""The function ``prepare`` calls for each stage: the registry's ``run`` (tests substitute entries here)."""


def default_stages() -> list[str]:
    """The stages ``prepare`` runs when none are named."""
    return [name for name, stage in REGISTRY.items() if stage.default]


def check_names(names: Iterable[str], what: str = "--stages") -> list[str]:
    """``names`` as a list, refusing unknown ones with :class:`ConfigError` listing the known stages."""
    names = list(names)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ConfigError(f"{what}: unknown stage(s) {', '.join(map(repr, unknown))}; the stages are "
                          f"{', '.join(REGISTRY)}")
    return names


def requirements(name: str) -> list[str]:
    """Every stage ``name`` needs, directly or through others, in registry order (``name`` excluded)."""
    needed: set[str] = set()
    todo = list(REGISTRY[name].requires)
    while todo:
        stage = todo.pop()
        if stage not in needed:
            needed.add(stage)
            todo.extend(REGISTRY[stage].requires)
    return [s for s in REGISTRY if s in needed]


def dependents(name: str) -> list[str]:
    """Every stage that needs ``name``, directly or through others, in registry order (``name`` excluded)."""
    return [s for s in REGISTRY if s != name and name in requirements(s)]


def plan(requested: Iterable[str] | None = None) -> list[str]:
    """The stages to have for ``requested`` (None: :func:`default_stages`): those plus what they require,
    in registry order."""
    names = default_stages() if requested is None else check_names(requested)
    wanted = set(names)
    for name in names:
        wanted.update(requirements(name))
    return [s for s in REGISTRY if s in wanted]


__all__ = ["Stage", "StageContext", "StageFunction", "REGISTRY", "STAGE_FUNCTIONS", "FAMILIES", "default_stages",
           "check_names", "requirements", "dependents", "plan"]
