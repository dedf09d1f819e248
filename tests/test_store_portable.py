"""Self-contained stores: the weights travel inside the store as safetensors (also from a trusted pickle),
so a store moved to another folder, with the original weights gone, still loads and serves its model."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from advlens.cli import main
from advlens.models import load_model
from advlens.models.fingerprint import model_fingerprint
from advlens.store import open_store

from conftest import USER_MODEL_MODULE, tiny_dataset, trained_tiny_model, write_npz_dataset


@pytest.fixture
def pickled_user_model(tmp_path, monkeypatch):
    """A user model module on sys.path and a torch checkpoint that pickles the whole trained module."""
    data = tiny_dataset()
    (tmp_path / "usermodel.py").write_text(USER_MODEL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    trained = trained_tiny_model(data)
    torch.save(trained.net, tmp_path / "whole.pt")  # an nn.Module, not a state dict: weights_only refuses it
    yield trained, data, write_npz_dataset(tmp_path / "d.npz", data), tmp_path / "whole.pt"
    sys.modules.pop("usermodel", None)


def test_a_moved_store_loads_its_model_without_the_original_weights(tmp_path, capsys, pickled_user_model):
    trained, data, dataset, checkpoint = pickled_user_model
    argv = ["prepare", "--model", "usermodel:build", "--weights", str(checkpoint), "--dataset", str(dataset),
            "--eps", "0.2", "--alpha", "0.07", "--steps", "3", "--batch-size", "32", "--device", "cpu",
            "--out", str(tmp_path / "store")]
    assert main(argv) == 2 and "--trust-pickle" in capsys.readouterr().err
    assert main([*argv, "--trust-pickle"]) == 0

    moved = tmp_path / "elsewhere" / "copied-store"
    moved.parent.mkdir()
    shutil.move(tmp_path / "store", moved)
    checkpoint.unlink()
    store = open_store(moved)
    path = store.weights_path()
    assert path == (moved / "model.safetensors").resolve() and path.is_absolute()
    assert not Path(store.config["model"]["weights"]).is_absolute(), "the store records a path relative to itself"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, "the weights are as readable as the rest"
    stored = load_file(str(path))  # plain safetensors: no unpickling needed to read the weights again
    for name, value in trained.net.state_dict().items():
        torch.testing.assert_close(stored[name], value, rtol=0, atol=0)

    model = load_model("usermodel:build", path, class_names=store.class_names,
                       input_shape=tuple(store.config["model"]["input_shape"]))  # trust_pickle stays False
    assert model_fingerprint(model) == store.config["model"]["sha256"]
    with torch.no_grad():
        np.testing.assert_allclose(model(data.images).numpy(), trained(data.images).numpy(), atol=1e-6)

    from advlens.analysis import Session

    session = Session(moved, trust_store_code=True, device="cpu")
    assert model_fingerprint(session.model) == store.config["model"]["sha256"]

    assert main(["info", str(moved), "--verify"]) == 0, "a moved store verifies"
