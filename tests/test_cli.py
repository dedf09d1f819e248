"""`advlens` command line: clear errors for bad input, and a full prepare on a generated dataset."""

from __future__ import annotations

import errno
import json
import socket
import sys

import pytest
import torch
from safetensors.torch import save_file

from advlens.cli import main
from advlens.pipeline import stages
from advlens.store import STAGES
from advlens.models.cifar_resnet import CifarResNet18
from advlens.store import open_store

from conftest import USER_MODEL_MODULE, tiny_dataset, trained_tiny_model, write_npz_dataset



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
    assert "dataset-fashion-mnist" not in err, "the Makefile installs Fashion-MNIST (Debian dataset-fashion-mnist)"
    assert code == 2 and "(3, 32, 32)" in err and "pick the model trained on this dataset" in err


def test_prepare_from_the_command_line_then_info(tmp_path, capsys, monkeypatch):
    data = tiny_dataset()
    dataset = write_npz_dataset(tmp_path / "d.npz", data)
    (tmp_path / "usermodel.py").write_text(USER_MODEL_MODULE)
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

    manifest = json.loads((store / "manifest.json").read_text())
    weights_written = (store / "model.safetensors").stat().st_mtime_ns
    calls = []
    for name in STAGES:
        monkeypatch.setitem(stages.STAGE_FUNCTIONS, name, lambda ctx, out, _name=name: calls.append(_name))
    code, out, _ = _run(capsys, *argv)  # same command again: nothing to redo
    assert code == 0 and calls == [], "no stage may run again"
    assert json.loads((store / "manifest.json").read_text()) == manifest
    assert (store / "model.safetensors").stat().st_mtime_ns == weights_written
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


@pytest.fixture
def user_prepare(tmp_path, monkeypatch):
    """`prepare` arguments (all but --out) for the user model `usermodel:build` on the tiny dataset as .npz."""
    data = tiny_dataset()
    dataset = write_npz_dataset(tmp_path / "d.npz", data)
    (tmp_path / "usermodel.py").write_text(USER_MODEL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    trained = trained_tiny_model(data)
    save_file({k: v.contiguous() for k, v in trained.net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    yield ["prepare", "--model", "usermodel:build", "--weights", str(tmp_path / "w.safetensors"), "--dataset",
           str(dataset), "--eps", "51/255", "--alpha", "0.07", "--steps", "5", "--batch-size", "16", "--device", "cpu"]
    sys.modules.pop("usermodel", None)


def _one_line(err: str) -> str:
    """The one error line of stderr (progress bars aside), asserting there is no traceback."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith("advlens "), err
    return errors[0]


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--eps", "-1"], "--eps must be a positive number"),
    (["--alpha", "0"], "--alpha must be a positive number"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--seed", "-1"], "--seed must lie in"),
    (["--attack", "file"], "--attack file needs --adversarial"),
    (["--attack", "fgsm", "--norm", "l2"], "--norm applies to pgd only"),
    (["--target-class", "1"], "--target-class needs --targeted"),
    (["--targeted", "--target-class", "7"], "--target-class 7 is not a class of the model (classes 0..2)"),
    (["--layer", "nope"], "no layer named 'nope'"),
    (["--device", "gpu0"], "--device 'gpu0' is not a device"),
    (["--augment", "4"], "--augment applies to the photos and imagenet-folder datasets"),
    (["--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--executor", "ray", "--device", "cuda"], "--executor ray runs its tasks on CPUs, not --device cuda"),
])
def test_bad_parameters_are_refused_before_any_work(tmp_path, capsys, user_prepare, extra, message):
    code, _, err = _run(capsys, *user_prepare, *extra, "--out", str(tmp_path / "s"))
    assert code == 2 and message in _one_line(err)
    assert not (tmp_path / "s").exists(), "nothing may be written before the parameters are checked"


def test_the_corrected_command_runs_after_a_refusal(tmp_path, capsys, user_prepare):
    code, _, err = _run(capsys, *user_prepare, "--steps", "0", "--out", str(tmp_path / "s"))
    assert code == 2 and "--steps" in err
    code, _, err = _run(capsys, *user_prepare, "--out", str(tmp_path / "s"))
    assert code == 0, err


def test_cuda_without_cuda_is_one_clear_line(tmp_path, capsys, monkeypatch, user_prepare):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [*user_prepare[:-2], "--device", "cuda", "--out", str(tmp_path / "s")]
    for command in (argv, ["serve", str(tmp_path / "s"), "--device", "cuda"],
                    ["train-demo-model", "--out", str(tmp_path / "w.safetensors"), "--device", "cuda:0"]):
        code, _, err = _run(capsys, *command)
        assert code == 2 and "CUDA is not available on this machine" in _one_line(err) and "--device cpu" in err
    assert not (tmp_path / "s").exists()


def test_a_full_disk_is_one_clear_line_and_the_next_run_resumes(tmp_path, capsys, monkeypatch, user_prepare):
    from advlens.store import StageWriter

    original = StageWriter.array

    def full(self, name, values, chunks=None):
        if name == "adversarial":
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, name, values, chunks)

    monkeypatch.setattr(StageWriter, "array", full)
    argv = [*user_prepare, "--out", str(tmp_path / "s")]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "No space left on device" in _one_line(err) and "the disk is full" in err
    monkeypatch.setattr(StageWriter, "array", original)
    code, _, err = _run(capsys, *argv)
    assert code == 0, err


def test_an_unwritable_output_is_one_clear_line(tmp_path, capsys, user_prepare):
    (tmp_path / "file.txt").write_text("not a folder")
    code, _, err = _run(capsys, *user_prepare, "--out", str(tmp_path / "file.txt" / "store"))
    assert code == 2 and "file.txt" in _one_line(err)


@pytest.fixture
def user_store(tmp_path):
    """A finished store whose model spec (`tests:tiny`) is not built in."""
    from advlens.pipeline import PrepareConfig, prepare

    data = tiny_dataset()
    config = PrepareConfig(model="tests:tiny", dataset="tiny", eps=0.2, alpha=0.07, steps=3, batch_size=32,
                           tsne_perplexity=5.0)
    return prepare(config, tmp_path / "store", model=trained_tiny_model(data), data=data).root


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _fake_server(monkeypatch) -> dict:
    """Replace the Session and the Dash app of `serve` by recorders; returns what they saw."""
    import advlens.analysis
    import advlens.app

    seen: dict = {}

    class RecordingSession:
        def __init__(self, store, **options):
            seen.update(options, store=store)
            self.model = None

    class RecordingApp:
        def run(self, **options):
            seen["run"] = options

    monkeypatch.setattr(advlens.analysis, "Session", RecordingSession)
    monkeypatch.setattr(advlens.app, "create_app", lambda session: RecordingApp())
    return seen


def test_serve_requires_trust_store_code_for_a_user_model(user_store, capsys, monkeypatch):
    seen = _fake_server(monkeypatch)
    port = str(_free_port())
    code, _, err = _run(capsys, "serve", str(user_store), "--port", port)
    assert code == 2 and "'tests:tiny'" in _one_line(err) and "--trust-store-code" in err
    assert "imports the module 'tests' and runs its factory" in err and not seen
    code, _, err = _run(capsys, "serve", str(user_store), "--port", port, "--trust-store-code", "--device", "cpu")
    assert code == 0, err
    assert seen["trust_store_code"] is True and seen["device"] == "cpu" and seen["run"]["debug"] is False


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.7", "example.org"])
def test_serve_debug_is_refused_off_loopback(user_store, capsys, monkeypatch, host):
    seen = _fake_server(monkeypatch)
    code, _, err = _run(capsys, "serve", str(user_store), "--trust-store-code", "--debug", "--host", host)
    assert code == 2 and f"refused on --host {host}" in _one_line(err) and not seen


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_serve_debug_runs_on_loopback(user_store, capsys, monkeypatch, host):
    seen = _fake_server(monkeypatch)
    code, _, err = _run(capsys, "serve", str(user_store), "--trust-store-code", "--debug", "--host", host,
                        "--port", str(_free_port()))
    assert code == 0, err
    assert seen["run"]["debug"] is True and seen["run"]["host"] == host
