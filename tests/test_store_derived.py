"""On-demand results kept in the store (``store.derived(kind)``): round trip, staleness, damage, read-only
folders, and ``--overwrite`` removing them (advlens wrote them)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_dataset, trained_tiny_model

from advlens.pipeline import PrepareConfig, prepare
from advlens.store import DerivedResults, open_store
from advlens.store.manifest import is_advlens_entry

KEY = {"pair": [3, 5], "attack": "pgd", "eps": [0.5, 1.0]}


def _results(tmp_path, stamps=None) -> DerivedResults:
    return DerivedResults(tmp_path, "pathway-graph", stamps or {"sweep": "aaa", "predict": "bbb"})


def test_round_trip_with_attrs(tmp_path):
    results = _results(tmp_path)
    assert results.get(KEY, ["sweep"]) is None
    weights = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert results.put(KEY, {"weights": weights, "ids": np.array([1, 2])}, {"layers": ["a", "b"]}, ["sweep"])
    found = _results(tmp_path).get(dict(reversed(list(KEY.items()))), ["sweep"])  # key order does not matter
    assert found is not None
    np.testing.assert_array_equal(found.arrays["weights"], weights)
    np.testing.assert_array_equal(found.arrays["ids"], [1, 2])
    assert found.attrs == {"layers": ["a", "b"]}
    assert results.keys() == [json.loads(json.dumps(KEY, sort_keys=True))]
    assert _results(tmp_path).get({**KEY, "eps": [0.5]}, ["sweep"]) is None  # another key


def test_redone_stage_makes_results_stale(tmp_path):
    _results(tmp_path).put(KEY, {"x": np.ones(2)}, depends_on=["sweep"])
    assert _results(tmp_path, {"sweep": "aaa", "predict": "changed"}).get(KEY, ["sweep"]) is not None
    assert _results(tmp_path, {"sweep": "redone", "predict": "bbb"}).get(KEY, ["sweep"]) is None


def test_damaged_file_is_computed_again(tmp_path):
    results = _results(tmp_path)
    results.put(KEY, {"x": np.arange(100.0)})
    path = results.path(KEY)
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF
    path.write_bytes(bytes(data))
    assert results.get(KEY) is None


def test_unknown_stage_and_bad_kind_are_refused(tmp_path):
    with pytest.raises(Exception, match="no finished stage 'datapaths'"):
        _results(tmp_path).put(KEY, {"x": np.ones(1)}, depends_on=["datapaths"])
    with pytest.raises(ValueError, match="lower-case"):
        DerivedResults(tmp_path, "../escape", {})
    with pytest.raises(TypeError, match="JSON"):
        _results(tmp_path).path({"x": object()})


def test_unwritable_store_keeps_nothing_and_says_so(tmp_path, caplog):
    (tmp_path / "derived").write_text("a file where the folder would go: every write fails")
    assert _results(tmp_path).put(KEY, {"x": np.ones(2)}) is False
    assert "kept in memory only" in caplog.text
    assert (tmp_path / "derived").read_text().startswith("a file")


def test_store_results_depend_on_stages_and_overwrite_removes_them(tmp_path):
    data = tiny_dataset(30)
    model = trained_tiny_model(tiny_dataset())
    config = dict(model="tests:tiny", dataset="tiny", eps=0.2, alpha=0.07, steps=2, batch_size=64, seed=3,
                  tsne_perplexity=5.0)
    prepare(PrepareConfig(**config), tmp_path / "s", model=model, data=data, stages=["predict"])
    store = open_store(tmp_path / "s")
    assert store.derived("datapaths").put(KEY, {"x": np.ones(3)}, depends_on=["predict"])
    assert open_store(tmp_path / "s").derived("datapaths").get(KEY, ["predict"]) is not None
    prepare(PrepareConfig(**config), tmp_path / "s", model=model, data=data, stages=["predict"], redo="predict")
    assert open_store(tmp_path / "s").derived("datapaths").get(KEY, ["predict"]) is not None  # same data
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())  # a redo that wrote other data
    manifest["stages"]["predict"]["arrays"]["pred"]["sha256"] = "0" * 64
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
    assert open_store(tmp_path / "s").derived("datapaths").get(KEY, ["predict"]) is None
    assert is_advlens_entry("derived")
    prepare(PrepareConfig(**{**config, "seed": 4}), tmp_path / "s", model=model, data=data, stages=["predict"],
            overwrite=True)
    assert not (tmp_path / "s" / "derived").exists()
