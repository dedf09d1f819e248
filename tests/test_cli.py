"""`advlens` command line: clear errors for bad input, and a full prepare on a generated dataset."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from advlens.cli import main
from advlens.models.cifar_resnet import CifarResNet18
from advlens.store import open_store

from conftest import tiny_dataset, trained_tiny_model, write_npz_dataset

MODEL_MODULE = '''
import torch
from torch import nn

def build():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )
    net.mean, net.std = (0.5,), (0.25,)
    return net
'''


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_missing_dataset_names_the_file_and_the_fix(tmp_path, capsys):
    code, _, err = _run(capsys, "prepare", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s"))
    assert code == 2
    assert "t10k-images-idx3-ubyte.gz" in err and "dataset-fashion-mnist" in err
    assert not (tmp_path / "s").exists()


def test_unknown_model_spec(tmp_path, capsys):
    code, _, err = _run(capsys, "prepare", "--model", "resnet-9000", "--dataset", "npz", "--data-dir",
                        str(write_npz_dataset(tmp_path / "d.npz", tiny_dataset())), "--out", str(tmp_path / "s"))
    assert code == 2 and "unknown model spec 'resnet-9000'" in err and "fashion-resnet" in err


def test_mismatched_weights_list_the_keys(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    save_file({"conv1.weight": torch.zeros(64, 3, 3, 3), "head.weight": torch.zeros(10, 512)}, str(weights))
    code, _, err = _run(capsys, "prepare", "--model", "cifar-resnet18", "--weights", str(weights),
                        "--out", str(tmp_path / "s"))
    assert code == 2
    assert "do not match" in err and "unexpected keys: head.weight" in err
    assert "missing keys: bn1.bias" in err and "(121 in all)" in err


def test_model_dataset_mismatch_is_refused(tmp_path, capsys):
    weights = tmp_path / "cifar.safetensors"
    save_file(CifarResNet18().state_dict(), str(weights))
    code, _, err = _run(capsys, "prepare", "--model", "cifar-resnet18", "--weights", str(weights),
                        "--out", str(tmp_path / "s"))  # default dataset: Fashion-MNIST, 1×28×28
    if "dataset-fashion-mnist" in err:
        pytest.skip("Fashion-MNIST not installed")
    assert code == 2 and "(3, 32, 32)" in err and "pick the model trained on this dataset" in err


def test_prepare_from_the_command_line_then_info(tmp_path, capsys, monkeypatch):
    data = tiny_dataset()
    dataset = write_npz_dataset(tmp_path / "d.npz", data)
    (tmp_path / "usermodel.py").write_text(MODEL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import usermodel  # noqa: F401 - the factory module the CLI will import

    trained = trained_tiny_model(data)
    save_file({k: v.contiguous() for k, v in trained.net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    store = tmp_path / "store"
    argv = ["prepare", "--model", "usermodel:build", "--weights", str(tmp_path / "w.safetensors"),
            "--dataset", str(dataset), "--eps", "51/255", "--alpha", "0.07", "--steps", "5", "--batch-size", "16",
            "--device", "cpu", "--out", str(store)]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    assert "analysis store ready" in out
    opened = open_store(store)
    assert opened.complete
    assert opened.config["attack"]["eps"] == pytest.approx(51 / 255)
    assert opened.config["model"]["analysed_layer"] == "3"  # the last spatial map: the second ReLU
    assert opened.load("attack", "linf").max() <= 51 / 255 + 1e-6

    code, out, _ = _run(capsys, *argv)  # same command again: nothing to redo
    assert code == 0
    code, _, err = _run(capsys, *argv[:-2], "--eps", "0.1", "--out", str(store))
    assert code == 2 and "another configuration" in err and "--overwrite" in err

    code, out, _ = _run(capsys, "info", str(store))
    assert code == 0 and "usermodel:build" in out and "projections" in out
    manifest = json.loads((store / "manifest.json").read_text())
    assert list(manifest["stages"]) and all(s in out for s in manifest["stages"])
    sys.modules.pop("usermodel", None)


def test_info_on_a_folder_that_is_not_a_store(tmp_path, capsys):
    code, _, err = _run(capsys, "info", str(tmp_path))
    assert code == 2 and "no manifest.json" in err
