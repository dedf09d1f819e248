"""The `sweep` stage (spec-004 §1–§2) and `advlens pathways --targeted`: stored arrays against the attack classes
and plain forward passes of the tiny net, the per-class sample, resuming a killed sweep, option checks before any
work, and the targeted sweep of one class pair kept in the store."""

from __future__ import annotations

import json
import logging
import shutil
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from advlens.attacks import FGSM, PGD
from advlens.cli import main
from advlens.pipeline import PrepareConfig, prepare, stages_pathways
from advlens.models import AnalysedModel
from advlens.pipeline.stages_pathways import TARGETED_KIND, sample_true_positives, targeted_key
from advlens.pipeline.sweep import attack_strengths, fold_batch_norms, gradient_model, sweep
from advlens.store import open_store

from conftest import USER_MODEL_MODULE, tiny_dataset, trained_tiny_model, write_npz_dataset

EPS = (0.3, 0.02, 0.1)  # given unsorted: the stage stores them ascending
STEPS = 4
PER_CLASS = 8
CONFIG = dict(model="tests:tiny", dataset="tiny", eps=0.2, alpha=0.07, steps=5, batch_size=16, seed=3,
              tsne_perplexity=5.0, sweep_eps=EPS, sweep_per_class=PER_CLASS, sweep_steps=STEPS)
LAYERS = {"1": 2, "3": 4}  # the tiny net's ReLUs, as the number of nn.Sequential modules up to them


def _config(**changes) -> PrepareConfig:
    """The tiny prepare run, its sweep with float32 gradients: the exact attack of the attack classes (bfloat16
    gradients are tested against them in tests/test_sweep_precision.py)."""
    config = PrepareConfig(**{**CONFIG, **changes})
    config.sweep_precision = "float32"
    return config


def _data():
    """The tiny images with every 7th label shifted, so some images are not true positives."""
    data = tiny_dataset()
    labels = data.labels.clone()
    labels[::7] = (labels[::7] + 1) % 3
    return type(data)(data.images, labels, data.class_names, data.name, data.split)


@pytest.fixture(scope="module")
def model_and_data():
    return trained_tiny_model(tiny_dataset()), _data()


@pytest.fixture(scope="module")
def store(model_and_data, tmp_path_factory):
    model, data = model_and_data
    return prepare(_config(), tmp_path_factory.mktemp("sweep") / "store", model=model, data=data, stages=["sweep"])


def _plain_maxima(model, images: torch.Tensor, layer: str) -> np.ndarray:
    """Per-channel spatial maxima from the nn.Sequential itself: no taps, no capture. Shape: (N, K)."""
    with torch.no_grad():
        return model.net[:LAYERS[layer]](model.normalize(images)).amax(dim=(2, 3)).numpy()


def test_stored_arrays_equal_the_attack_classes_and_plain_forward_passes(store, model_and_data):
    model, data = model_and_data
    group = store.group("sweep")
    attrs = group.attrs
    assert attrs["layers"] == ["1", "3"] and attrs["channels"] == [4, 6] and attrs["attacks"] == ["pgd", "fgsm"]
    assert attrs["eps"] == sorted(EPS) and attrs["steps"] == STEPS and attrs["alpha_ratio"] == 0.25
    assert attrs["per_class"] == PER_CLASS and attrs["seed"] == 3 and attrs["seconds"] > 0
    assert attrs["precision"] == "float32" and 0 < attrs["benign_cpu_seconds"] <= attrs["cpu_seconds"]
    assert set(attrs["attack_seconds"]) == {"pgd", "fgsm"} and set(attrs["machine"]) >= {"cpus", "load_average"}
    with torch.no_grad():
        pred = model(data.images).argmax(1).numpy()
    labels = data.labels.numpy()
    true_positive = np.flatnonzero(pred == labels)
    np.testing.assert_array_equal(group["benign_index"][...], true_positive)
    np.testing.assert_array_equal(group["benign_label"][...], labels[true_positive])
    for i, layer in enumerate(attrs["layers"]):
        np.testing.assert_allclose(group[f"benign_max_L{i:02d}"][...],
                                   _plain_maxima(model, data.images[true_positive], layer), rtol=1e-5, atol=1e-6)
    sample = group["sample_index"][...]
    np.testing.assert_array_equal(group["sample_label"][...], labels[sample])
    images, targets = data.images[sample], data.labels[sample]
    adv_pred = group["adv_pred"][...]
    assert adv_pred.shape == (2, 3, len(sample)) and group["adv_delta"].shape == (2, 3, len(sample), 1, 8, 8)
    for a, attack in enumerate(attrs["attacks"]):
        for e, eps in enumerate(attrs["eps"]):
            runner = PGD(model, eps, eps / 4, STEPS) if attack == "pgd" else FGSM(model, eps)
            adversarial = runner(images, targets)
            with torch.no_grad():
                probs = torch.softmax(model(adversarial), 1)
            np.testing.assert_array_equal(adv_pred[a, e], probs.argmax(1).numpy(), err_msg=f"{attack} {eps}")
            np.testing.assert_allclose(group["adv_prob_true"][a, e], probs[torch.arange(len(sample)), targets],
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(group["adv_delta"][a, e], (adversarial - images).half().numpy())
            for i, layer in enumerate(attrs["layers"]):
                np.testing.assert_allclose(group[f"adv_max_L{i:02d}"][a, e], _plain_maxima(model, adversarial, layer),
                                           rtol=1e-5, atol=1e-6, err_msg=f"{attack} {eps} {layer}")
    success = adv_pred != labels[sample]
    assert success[:, -1].mean() > success[:, 0].mean(), "a stronger attack fools more images"


def test_the_sweep_function_gives_the_stages_arrays_in_any_chunking(store, model_and_data):
    model, data = model_and_data
    group = store.group("sweep")
    sample = group["sample_index"][...]
    seen = []
    arrays = sweep(model, data.images[sample], data.labels[sample], ["1", "3"], sorted(EPS), steps=STEPS, chunk=7,
                   progress=seen.append, precision="float32")
    assert sum(seen) == 2 * len(EPS) * len(sample)
    assert set(arrays) == {name for name in group.array_keys() if name.startswith("adv_")}
    for name, values in arrays.items():
        np.testing.assert_array_equal(values, group[name][...], err_msg=name)


def test_the_sample_is_seeded_per_class_and_holds_only_true_positives(store, model_and_data):
    model, data = model_and_data
    group = store.group("sweep")
    sample, labels = group["sample_index"][...], group["sample_label"][...]
    with torch.no_grad():
        correct = (model(data.images).argmax(1) == data.labels).numpy()
    true_labels = data.labels.numpy()
    assert correct[sample].all(), "only true positives are attacked"
    assert np.all(np.diff(labels) >= 0), "grouped by class, class 0 first"
    for c in range(3):
        rows = sample[labels == c]
        available = np.flatnonzero(correct & (true_labels == c))
        assert len(rows) == min(PER_CLASS, len(available)) and np.all(np.diff(rows) > 0)
        assert group.attrs["sample_count"][c] == len(rows)
    assert sum(group.attrs["sample_count"]) == len(sample) == 3 * PER_CLASS  # every class has more than 8
    again = sample_true_positives(true_labels, correct, PER_CLASS, 3, 3)
    np.testing.assert_array_equal(again, sample)
    other = sample_true_positives(true_labels, correct, PER_CLASS, 4, 3)
    assert not np.array_equal(other, sample), "another seed draws another sample"
    everything = sample_true_positives(true_labels, correct, 1000, 3, 3)
    np.testing.assert_array_equal(everything, np.concatenate([np.flatnonzero(correct & (true_labels == c))
                                                              for c in range(3)]))


def test_a_killed_sweep_resumes_from_its_finished_parts(store, model_and_data, tmp_path, monkeypatch):
    model, data = model_and_data
    root = tmp_path / "s"
    original = stages_pathways.attack_strengths
    calls = []

    def dying(*args, **kwargs):
        calls.append(args[5])
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill in the second part")
        return original(*args, **kwargs)

    monkeypatch.setattr(stages_pathways, "attack_strengths", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare(_config(), root, model=model, data=data, stages=["sweep"])
    assert "sweep" not in json.loads((root / "manifest.json").read_text())["stages"]
    work = sorted(p.name for p in next(root.glob(".work-sweep-*")).iterdir())
    assert work == ["benign.npz", "pgd_00000000.npz"]

    calls.clear()
    monkeypatch.setattr(stages_pathways, "attack_strengths", lambda *a, **k: (calls.append(a[5]), original(*a, **k))[1])
    resumed = prepare(_config(), root, model=model, data=data, stages=["sweep"])
    chunk = store.group("sweep").attrs["chunk"]
    parts = -(-3 * PER_CLASS // chunk)
    assert calls == ["pgd"] * (parts - 1) + ["fgsm"] * parts, "the first part is not computed again"
    assert not list(root.glob(".work-*")) and not list(root.glob(".partial-*"))
    reference = store.group("sweep")
    assert resumed.group("sweep").array_keys() == reference.array_keys()
    for name in reference.array_keys():
        np.testing.assert_array_equal(resumed.load("sweep", name), reference[name][...], err_msg=name)


def test_changed_settings_are_reported_with_the_redo_hint(store, model_and_data, caplog):
    model, data = model_and_data
    config = _config(sweep_steps=2, sweep_per_class=5)
    config.sweep_precision = "bfloat16"
    with caplog.at_level(logging.WARNING):
        prepare(config, store.root, model=model, data=data, stages=["sweep"])
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "4 PGD steps, not 2" in message and "at most 8 images per class, not 5" in message
    assert "float32 gradients, not bfloat16" in message
    assert "`--redo sweep`" in message
    assert open_store(store.root).group("sweep").attrs["steps"] == STEPS, "a finished stage is kept"


def test_the_recorded_command_reproduces_the_sweep_settings():
    from advlens.cli import build_parser

    config = _config(sweep_attacks=("fgsm",))
    args = build_parser().parse_args(["prepare", *config.command_line(), "--out", "x"])
    assert args.sweep_eps == EPS and args.sweep_attacks == ("fgsm",)
    assert args.sweep_per_class == PER_CLASS and args.sweep_steps == STEPS


class _Residual(nn.Module):
    """conv → BN → ReLU → conv → BN, plus a shortcut, then ReLU; a head: pool → linear (3 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.shortcut = nn.Conv2d(1, 4, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return self.head(torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x)))


def _residual_model() -> AnalysedModel:
    torch.manual_seed(5)
    net = _Residual()
    for bn in (net.bn1, net.bn2):  # running statistics and affine parameters far from the identity
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
    return AnalysedModel(net, mean=(0.5,), std=(0.25,), input_shape=(1, 8, 8), class_names=("a", "b", "c"),
                         spec="tests:residual").eval()


def test_folded_batch_norms_compute_the_same_function_and_leave_the_model_alone():
    model = _residual_model()
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    folded = fold_batch_norms(model.net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules()), "both batch norms are folded"
    images = tiny_dataset(16).images
    with torch.no_grad():
        np.testing.assert_allclose(folded(model.normalize(images)).numpy(), model(images).numpy(), atol=1e-5)
        pixels = gradient_model(model)
        np.testing.assert_allclose(pixels(images).numpy(), model(images).numpy(), atol=1e-5)
    assert not any(p.requires_grad for p in pixels.parameters())
    after = model.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and all(p.requires_grad for p in model.parameters())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.net.modules()) == 2 and not model.training


def test_the_sweep_on_a_batch_norm_network_equals_the_attack_classes():
    model = _residual_model()
    data = tiny_dataset(12)
    images, labels = data.images, data.labels
    result = attack_strengths(model, images, labels, ["bn1", "bn2"], [0.05, 0.2], "pgd", 3, 0.25,
                              precision="float32")
    for e, eps in enumerate([0.05, 0.2]):
        adversarial = PGD(model, eps, eps / 4, 3)(images, labels)
        np.testing.assert_array_equal(result["delta"][e], (adversarial - images).half().numpy())
        with torch.no_grad():
            np.testing.assert_array_equal(result["pred"][e], model(adversarial).argmax(1).numpy())


# ---------------------------------------------------------------------- the command line

@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    """`prepare` arguments (all but --out) for the user model `sweepmodel:build` on the tiny data as .npz."""
    folder = tmp_path_factory.mktemp("user")
    data = _data()
    dataset = write_npz_dataset(folder / "d.npz", data)
    (folder / "sweepmodel.py").write_text(USER_MODEL_MODULE)
    trained = trained_tiny_model(tiny_dataset())
    save_file({k: v.contiguous() for k, v in trained.net.state_dict().items()}, str(folder / "w.safetensors"))
    sys.path.insert(0, str(folder))
    yield trained, data, ["prepare", "--model", "sweepmodel:build", "--weights", str(folder / "w.safetensors"),
                          "--dataset", str(dataset), "--batch-size", "16", "--device", "cpu", "--seed", "3"]
    sys.path.remove(str(folder))
    sys.modules.pop("sweepmodel", None)


@pytest.fixture(scope="module")
def cli_store(user_model, tmp_path_factory):
    _, _, argv = user_model
    out = tmp_path_factory.mktemp("cli") / "store"
    code = main([*argv, "--eps", "51/255", "--alpha", "0.07", "--steps", "5", "--stages", "statistics,projections,sweep",
                 "--sweep-eps", "0.05,0.3",
                 "--sweep-steps", "4", "--sweep-per-class", "8", "--out", str(out)])
    assert code == 0
    return out


def _one_line(err: str) -> str:
    """The one error line of stderr (progress bars aside), asserting there is no traceback."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith("advlens "), err
    return errors[0]


@pytest.mark.parametrize("extra, message", [
    (["--sweep-eps", "0,1/255"], "--sweep-eps must be strengths in (0, 1]"),
    (["--sweep-eps", "2"], "--sweep-eps must be strengths in (0, 1]"),
    (["--sweep-eps", "1/255,2/255,1/255"], "--sweep-eps lists a strength twice"),
    (["--sweep-eps", ","], "--sweep-eps must be strengths in (0, 1]"),
    (["--sweep-attacks", "pgd,cw"], "--sweep-attacks must name each of pgd, fgsm at most once, got pgd,cw"),
    (["--sweep-attacks", "fgsm,fgsm"], "--sweep-attacks must name each of pgd, fgsm at most once"),
    (["--sweep-per-class", "0"], "--sweep-per-class must be at least 1, got 0"),
    (["--sweep-steps", "0"], "--sweep-steps must be at least 1, got 0"),
])
def test_bad_sweep_options_are_refused_before_any_work(user_model, tmp_path, capsys, extra, message):
    code = main([*user_model[2], *extra, "--out", str(tmp_path / "s")])
    assert code == 2 and message in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "s").exists(), "nothing may be written before the options are checked"


def test_an_unparsable_strength_is_a_usage_error(user_model, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*user_model[2], "--sweep-eps", "1/255,big", "--out", str(tmp_path / "s")])
    assert exit_.value.code == 2 and "not a number: 'big'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_the_targeted_sweep_hits_the_target_more_often_and_is_kept(user_model, cli_store, tmp_path, capsys):
    trained, data, _ = user_model
    root = tmp_path / "copy"
    shutil.copytree(cli_store, root)
    code = main(["pathways", str(root), "--original", "a", "--target", "1", "--targeted", "--trust-store-code"])
    out, err = capsys.readouterr()
    assert code == 0 and "targeted sweep 0 'a' → 1 'b': 8 images, computed now" in out, err
    store = open_store(root)
    found = store.derived(TARGETED_KIND).get(targeted_key(store, 0, 1), ["predict", "sweep"])
    assert found is not None and found.attrs["targeted"] and found.attrs["eps"] == [0.05, 0.3]
    sweep = store.group("sweep")
    of_class = sweep["sample_label"][...] == 0
    np.testing.assert_array_equal(found.arrays["sample_index"], sweep["sample_index"][...][of_class])
    targeted_hits = (found.arrays["adv_pred"] == 1).sum()
    untargeted_hits = (sweep["adv_pred"][...][:, :, of_class] == 1).sum()
    assert targeted_hits > untargeted_hits, (targeted_hits, untargeted_hits)
    # against the attack class itself: targeted PGD toward class 1 at ε = 0.3, its gradients in the number
    # format the store's sweep recorded (bfloat16 on a CPU with native bfloat16), its predictions in float32
    precision = sweep.attrs["precision"]
    assert found.attrs["precision"] == precision and precision in ("bfloat16", "float32")
    images = data.images[torch.from_numpy(found.arrays["sample_index"])]
    attack = PGD(gradient_model(trained, precision), 0.3, 0.3 / 4, 4, targeted=True)
    adversarial = attack(images, torch.full((len(images),), 1))
    with torch.no_grad():
        probs = torch.softmax(trained(adversarial), 1)
    np.testing.assert_array_equal(found.arrays["adv_pred"][0, 1], probs.argmax(1).numpy())
    np.testing.assert_allclose(found.arrays["adv_prob_target"][0, 1], probs[:, 1].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(found.arrays["adv_prob_true"][0, 1], probs[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(found.arrays["adv_max_L01"][0, 1], _plain_maxima(trained, adversarial, "3"),
                               rtol=1e-5, atol=1e-6)
    assert "pathway graph 0 'a' → 1 'b' (pgd, targeted sweep)" in out
    code = main(["pathways", str(root), "--original", "0", "--target", "B", "--targeted", "--trust-store-code"])
    assert code == 0 and "read from the store" in capsys.readouterr().out


def test_without_targeted_the_command_builds_and_keeps_the_pairs_graph(user_model, cli_store, tmp_path, capsys):
    from advlens.analysis import Session

    trained, _, _ = user_model
    root = tmp_path / "copy"
    shutil.copytree(cli_store, root)
    code = main(["pathways", str(root), "--original", "c", "--target", "a", "--attack", "fgsm",
                 "--trust-store-code"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert not out.startswith("targeted sweep") and not (root / "derived" / TARGETED_KIND).exists()
    graph = Session(root, model=trained).pathway_graph(2, 0, attack="fgsm")  # read back from the store
    assert f"pathway graph 2 'c' → 0 'a' (fgsm, untargeted sweep): {graph.num_nodes} neurons in 2 layers" in out
    assert f"{graph.num_edges} edges" in out and len(list((root / "derived" / "pathway-graph").glob("*.npz"))) == 1


@pytest.mark.parametrize("original, target, message", [
    ("nope", "1", "--original 'nope' is not a class of the store; the classes are 0 'a', 1 'b', 2 'c'"),
    ("0", "3", "--target '3' is not a class of the store"),
    ("-1", "1", "--original '-1' is not a class of the store"),
    ("b", "1", "--original and --target are both class 1 'b'"),
])
def test_bad_classes_exit_2_naming_the_classes(cli_store, capsys, original, target, message):
    code = main(["pathways", str(cli_store), "--original", original, "--target", target, "--targeted"])
    assert code == 2 and message in _one_line(capsys.readouterr().err)
    assert not (cli_store / "derived").exists()


@pytest.mark.parametrize("extra, message", [
    (["--attack", "cw"], "--attack 'cw' is not in the store's sweep; use one of pgd, fgsm"),
    (["--max-images", "0"], "--max-images must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_bad_pathways_options_exit_2(cli_store, capsys, extra, message):
    code = main(["pathways", str(cli_store), "--original", "0", "--target", "1", *extra])
    assert code == 2 and message in _one_line(capsys.readouterr().err)
    assert not (cli_store / "derived").exists()


def test_a_store_without_the_sweep_says_how_to_add_it(user_model, tmp_path, capsys):
    out = tmp_path / "s"
    assert main([*user_model[2], "--stages", "predict", "--out", str(out)]) == 0
    capsys.readouterr()
    code = main(["pathways", str(out), "--original", "0", "--target", "1", "--targeted"])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "has no sweep stage" in line and "--stages sweep" in line
