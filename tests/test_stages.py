"""The stage registry: which stages `prepare` runs for a request, resuming finished ones, adding an optional stage
to a store written before it existed, `--redo` of a stage and its dependents, and what `advlens info` says."""

from __future__ import annotations

import json
import shlex

import pytest

from advlens.analysis import Session
from advlens.cli import build_parser, main
from advlens.errors import ConfigError, StoreError
from advlens.pipeline import PrepareConfig, prepare, stages
from advlens.store import STAGES, open_store
from advlens.store.manifest import CORE_STAGES

from conftest import tiny_dataset, trained_tiny_model

CONFIG = dict(model="tests:tiny", dataset="tiny", eps=0.2, alpha=0.07, steps=5, batch_size=16, seed=3,
              tsne_perplexity=5.0, feature_steps=2)
CORE = ["predict", "attack", "activations", "statistics", "projections"]


def _config(**changes) -> PrepareConfig:
    return PrepareConfig(**{**CONFIG, **changes})


@pytest.fixture(scope="module")
def model_and_data():
    data = tiny_dataset()
    return trained_tiny_model(data), data


@pytest.fixture(scope="module")
def core_store(model_and_data, tmp_path_factory):
    """A store of paper 001's stages only: what advlens wrote before the features stage existed."""
    model, data = model_and_data
    root = tmp_path_factory.mktemp("core") / "store"
    prepare(_config(), root, model=model, data=data, stages=CORE)
    return root


def _recording(monkeypatch) -> list[str]:
    calls: list[str] = []
    for name in STAGES:
        fn = stages.STAGE_FUNCTIONS[name]
        monkeypatch.setitem(stages.STAGE_FUNCTIONS, name,
                            lambda ctx, out, _fn=fn, _name=name: (calls.append(_name), _fn(ctx, out))[1])
    return calls


def _copy(root, tmp_path):
    import shutil

    shutil.copytree(root, tmp_path / "store")
    return tmp_path / "store"


def test_the_registry_lists_every_store_stage_after_the_ones_it_needs():
    assert list(stages.REGISTRY) == list(STAGES) == [*CORE, "features", "sweep", "profiles"]
    assert list(CORE_STAGES) == CORE
    assert {name: stage.requires for name, stage in stages.REGISTRY.items()} == {
        "predict": (), "attack": ("predict",), "activations": ("attack",), "statistics": ("attack",),
        "projections": ("activations",), "features": ("predict",), "sweep": ("predict",), "profiles": ("predict",)}
    assert stages.default_stages() == [*CORE, "features", "sweep", "profiles"]
    assert stages.plan(None) == [*CORE, "features", "sweep", "profiles"]
    assert stages.plan(["features"]) == ["predict", "features"]
    assert stages.plan(["projections"]) == ["predict", "attack", "activations", "projections"]
    assert stages.plan(["features", "statistics"]) == ["predict", "attack", "statistics", "features"]
    assert stages.dependents("attack") == ["activations", "statistics", "projections"]
    assert stages.dependents("predict") == [*CORE[1:], "features", "sweep", "profiles"]
    assert stages.dependents("features") == []


def test_unknown_stage_names_are_refused_before_any_work(model_and_data, tmp_path):
    model, data = model_and_data
    with pytest.raises(ConfigError, match=r"unknown stage\(s\) 'nope'.*predict, attack"):
        prepare(_config(), tmp_path / "s", model=model, data=data, stages=["features", "nope"])
    with pytest.raises(ConfigError, match="--redo: unknown stage"):
        prepare(_config(), tmp_path / "s", model=model, data=data, redo="everything")
    with pytest.raises(ConfigError, match="--feature-steps must be at least 1"):
        prepare(_config(feature_steps=0), tmp_path / "s", model=model, data=data)
    assert not (tmp_path / "s").exists()


def test_features_on_an_empty_store_runs_only_what_it_needs(model_and_data, tmp_path, monkeypatch):
    model, data = model_and_data
    calls = _recording(monkeypatch)
    store = prepare(_config(), tmp_path / "s", model=model, data=data, stages=["features"])
    assert calls == ["predict", "features"]
    assert store.finished_stages == ["predict", "features"]
    assert store.has_stage("features") and not store.has_stage("attack") and not store.complete


def test_an_old_store_without_features_stays_complete_and_gains_only_the_features(core_store, model_and_data,
                                                                                   tmp_path, monkeypatch):
    model, data = model_and_data
    root = _copy(core_store, tmp_path)
    before = json.loads((root / "manifest.json").read_text())
    store = open_store(root)
    assert store.complete and store.finished_stages == CORE and not store.has_stage("features")
    assert store.missing_stages == ["features", "sweep", "profiles"]
    with pytest.raises(StoreError, match=r"no feature visualisations.*advlens prepare .*--stages features"):
        Session(store, model=model).features
    with pytest.raises(StoreError, match=r"has no 'features' stage .*--stages features"):
        store.group("features")

    calls = _recording(monkeypatch)
    added = prepare(_config(), root, model=model, data=data)  # the default stages: only features, sweep and profiles are missing
    assert calls == ["features", "sweep", "profiles"]
    after = json.loads((root / "manifest.json").read_text())
    assert after["config_hash"] == before["config_hash"], "the stage list must not change the store's identity"
    assert {s: after["stages"][s] for s in CORE} == before["stages"], "finished stages are kept as they were"
    assert added.complete and added.has_stage("features")
    assert Session(added, model=model).features.layers() == ["1", "3"]

    calls.clear()
    prepare(_config(), root, model=model, data=data, stages=["features"])
    assert calls == [], "a finished stage is not run again"


def test_features_on_a_finished_core_store_runs_only_features(core_store, model_and_data, tmp_path, monkeypatch):
    model, data = model_and_data
    root = _copy(core_store, tmp_path)
    calls = _recording(monkeypatch)
    store = prepare(_config(feature_steps=3), root, model=model, data=data, stages=["features"])
    assert calls == ["features"]
    assert store.group("features").attrs["steps"] == 3, "the stage records its settings"


def test_redo_recomputes_a_stage_and_only_its_dependents(core_store, model_and_data, tmp_path, monkeypatch):
    model, data = model_and_data
    root = _copy(core_store, tmp_path)
    prepare(_config(), root, model=model, data=data)
    calls = _recording(monkeypatch)
    prepare(_config(), root, model=model, data=data, redo="features")
    assert calls == ["features"]
    calls.clear()
    prepare(_config(), root, model=model, data=data, redo="attack")
    assert calls == ["attack", "activations", "statistics", "projections"], "features does not read the attack"
    calls.clear()
    store = prepare(_config(), root, model=model, data=data, redo="predict")
    assert calls == [*CORE, "features", "sweep", "profiles"]
    assert store.complete and store.has_stage("features")


def test_redo_of_a_stage_outside_the_request_keeps_the_store_whole(core_store, model_and_data, tmp_path,
                                                                   monkeypatch):
    model, data = model_and_data
    root = _copy(core_store, tmp_path)
    calls = _recording(monkeypatch)
    store = prepare(_config(), root, model=model, data=data, stages=["features"], redo="activations")
    assert calls == ["activations", "projections", "features"]
    assert store.complete


def test_info_lists_every_stage_and_the_command_that_adds_a_missing_one(core_store, tmp_path, capsys):
    root = _copy(core_store, tmp_path)
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    for stage in CORE:
        assert " s  {" in lines[stage], f"{stage} shows its time"
    assert "not prepared (optional)" in lines["features"]
    command = next(line.strip() for line in out.splitlines() if line.strip().startswith("advlens prepare"))
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert args.stages == ["features", "sweep", "profiles"] and args.out == str(root) and args.model == "tests:tiny"


def test_cli_stages_option(tmp_path, capsys):
    assert build_parser().parse_args(["prepare", "--out", "x", "--stages", "features, predict"]).stages == \
        ["features", "predict"]
    assert build_parser().parse_args(["prepare", "--out", "x"]).stages is None
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["prepare", "--out", "x", "--stages", "features,nope"])
    assert exit_.value.code == 2 and "unknown stage(s) 'nope'" in capsys.readouterr().err


def test_other_feature_settings_keep_the_finished_stage_and_say_how_to_redo_it(core_store, model_and_data,
                                                                              tmp_path, monkeypatch, caplog):
    model, data = model_and_data
    root = _copy(core_store, tmp_path)
    prepare(_config(), root, model=model, data=data, stages=["features"])
    calls = _recording(monkeypatch)
    with caplog.at_level("WARNING", logger="advlens.pipeline.prepare"):
        store = prepare(_config(feature_steps=5), root, model=model, data=data, stages=["features"])
    assert calls == [] and store.group("features").attrs["steps"] == 2
    assert "computed with 2 feature-visualisation steps, not the 5 asked for; `--redo features`" in caplog.text
