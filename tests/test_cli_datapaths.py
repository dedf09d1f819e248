"""`advlens datapaths STORE --pairs SPEC` (through `advlens.cli.main`): pairs' datapaths precomputed into the store (what the app then reads),
resumable, `top:N` = the pairs of medium adversarialness, and bad input refused with one line and exit status 2
before any work."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from conftest import USER_MODEL_MODULE, tiny_dataset, trained_tiny_model, write_npz_dataset
from safetensors.torch import save_file

from advlens import cli_datapaths
from advlens.analysis import Session
from advlens.analysis import datapaths_pair
from advlens.cli import main
from advlens.pipeline import PrepareConfig, prepare
from advlens.store.manifest import CORE_STAGES

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = ["--steps", "10", "--targets", "2"]


@pytest.fixture(scope="module")
def user_store(tmp_path_factory):
    """A store of a user model (`dpmodel:build`, the tiny net) with paper 001's stages; the module on sys.path."""
    folder = tmp_path_factory.mktemp("cli-datapaths")
    (folder / "dpmodel.py").write_text(USER_MODEL_MODULE)
    data = tiny_dataset()
    trained = trained_tiny_model(data)
    save_file({k: v.contiguous() for k, v in trained.net.state_dict().items()}, str(folder / "w.safetensors"))
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        config = PrepareConfig(model="dpmodel:build", weights=str(folder / "w.safetensors"),
                               dataset=str(write_npz_dataset(folder / "d.npz", data)), eps=0.2, alpha=0.07, steps=5,
                               batch_size=64, seed=3, tsne_perplexity=5.0)
        prepare(config, folder / "store", stages=CORE_STAGES)
        yield folder / "store"
    sys.modules.pop("dpmodel", None)


@pytest.fixture
def store(user_store, tmp_path):
    """A fresh copy per test (the command writes into it)."""
    shutil.copytree(user_store, tmp_path / "store")
    return tmp_path / "store"


def invoke(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `advlens datapaths ...` through the command line's entry point."""
    code = main(["datapaths", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def counting(monkeypatch) -> list[int]:
    """Count the pairs whose datapaths are computed (not read from the store)."""
    calls: list[int] = []
    real = datapaths_pair.compute_pair_datapaths
    monkeypatch.setattr(datapaths_pair, "compute_pair_datapaths",
                        lambda model, pair, *a, **k: calls.append(pair) or real(model, pair, *a, **k))
    return calls


def test_pairs_are_computed_into_the_store_and_skipped_the_next_time(store, capsys, monkeypatch):
    calls = counting(monkeypatch)
    code, out, _ = invoke(capsys, str(store), "--pairs", "3,0,3", "--trust-store-code", *QUICK)
    assert code == 0 and calls == [3, 0]
    assert "2 to compute" in out and "2 computed now" in out
    session = Session(store, trust_store_code=True)
    stored = session.datapath_examples(targets=2, steps=10).stored
    assert np.flatnonzero(stored).tolist() == [0, 3]
    paths = session.stored_pair_datapaths(3, targets=2, steps=10)
    assert paths is not None and paths.pair == 3 and paths.num_targets == 2 and paths.steps == 10
    code, out, _ = invoke(capsys, str(store), "--pairs", "0,1,3", "--trust-store-code", *QUICK)
    assert code == 0 and calls == [3, 0, 1], "stored pairs are skipped: an interrupted run goes on"
    assert "2 already stored, 1 to compute" in out


def test_top_n_takes_the_pairs_of_medium_adversarialness(store, capsys, monkeypatch):
    calls = counting(monkeypatch)
    code, _, _ = invoke(capsys, str(store), "--pairs", "top:3", "--trust-store-code", *QUICK)
    assert code == 0
    import zarr
    attack, rows = zarr.open_group(str(store / "attack"), mode="r"), zarr.open_group(
        str(store / "activations"), mode="r")["row"][...]
    probs = np.sort(attack["adv_probs"][...][rows], axis=1)
    score = 1 - (probs[:, -1] - probs[:, -2])
    distance = np.abs(score - np.median(score))
    assert len(calls) == 3
    assert distance[calls].max() <= np.delete(distance, calls).min()


def test_an_interrupted_run_keeps_the_finished_pairs_and_the_same_command_goes_on(store, capsys, monkeypatch):
    calls: list[int] = []
    real = datapaths_pair.compute_pair_datapaths

    def interrupted_at_the_second(model, pair, *args, **kwargs):
        calls.append(pair)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl+C during the second pair
        return real(model, pair, *args, **kwargs)

    monkeypatch.setattr(datapaths_pair, "compute_pair_datapaths", interrupted_at_the_second)
    code, _, err = invoke(capsys, str(store), "--pairs", "all", "--trust-store-code", *QUICK)
    assert code == 130 and "run the same command again to resume" in err
    assert calls == [0, 1]
    monkeypatch.setattr(datapaths_pair, "compute_pair_datapaths", real)
    calls = counting(monkeypatch)
    code, out, _ = invoke(capsys, str(store), "--pairs", "0,1,2", "--trust-store-code", *QUICK)
    assert code == 0 and calls == [1, 2] and "1 already stored" in out


def test_all_is_every_pair_in_order_and_ids_keep_their_order():
    assert cli_datapaths.parse_pairs("all", 4) == [0, 1, 2, 3]
    assert cli_datapaths.parse_pairs(" 12, 3 ,12 ", 20) == [12, 3]
    assert cli_datapaths.parse_pairs("TOP:7", 20) == 7


@pytest.mark.parametrize("argv, words", [
    (["--pairs", "1,x"], "'x' is not a pair id"),
    (["--pairs", "-1"], "'-1' is not a pair id"),
    (["--pairs", "100000"], "pair 100000 is not in the store"),
    (["--pairs", "top:0"], "top:N needs a positive whole number"),
    (["--pairs", "some"], "use pair ids (12,40,7), 'all' or 'top:N'"),
    (["--pairs", "1", "--targets", "0"], "--targets must be at least 1"),
    (["--pairs", "1", "--device", "gpu0"], "--device 'gpu0' is not a device"),
    (["--pairs", "1"], "--trust-store-code"),
])
def test_bad_input_is_one_line_and_exit_status_2_before_any_work(store, capsys, monkeypatch, argv, words):
    calls = counting(monkeypatch)
    code, out, err = invoke(capsys, str(store), *argv, *QUICK[:2])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("advlens datapaths: error: ")
    assert words in lines[0] and "Traceback" not in err
    assert calls == [] and not (store / "derived").exists()


def test_a_store_without_pairs_is_refused(tmp_path, capsys):
    data = tiny_dataset()
    prepare(PrepareConfig(model="tests:tiny", dataset="tiny", eps=0.2, alpha=0.07, steps=2, batch_size=64),
            tmp_path / "s", model=trained_tiny_model(data), data=data, stages=["predict"])
    code, _, err = invoke(capsys, str(tmp_path / "s"), "--pairs", "all")
    assert code == 2 and "has no attack or activations stage" in err and "advlens prepare" in err
