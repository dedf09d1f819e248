"""The paper-001 stages of ``prepare``: predict → attack → activations → statistics → projections.

Each stage reads what the earlier stages stored and writes its own arrays through a
:class:`~advlens.store.StageWriter`. "Keep true positives" happens in ``predict`` (flag
``true_positive``) and "keep successes" in ``attack`` (flag ``success``). Together they are the
store's core (:data:`advlens.store.CORE_STAGES`): a store holding them is ``complete``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm import tqdm

from advlens import measures
from advlens.attacks import FGSM, PGD, PrecomputedAttack
from advlens.errors import AttackError
from advlens.models import AnalysedModel
from advlens.pipeline.executor import run_sharded, shards
from advlens.pipeline.stage import Stage, StageContext
from advlens.projections import tsne_embedding
from advlens.store import StageWriter

logger = logging.getLogger(__name__)
CLASS_CI_LEVEL = 0.95
PERCENTILE_LEVELS = (2.5, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5)
"""Stored percentiles of each class's activation × weight: the bounds of the central 50, 80, 90 and 95%
percentile bands, exactly (other levels are interpolated)."""
BAND_KIND = measures.DEFAULT_BAND_KIND
BAND_LEVEL = measures.DEFAULT_BAND_LEVEL
"""The store's default band (attrs ``band_kind``, ``band_level``): see ``advlens.measures.bands``."""
QUANTILE_LEVELS = (0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 0.995)
DEFAULT_RF_QUANTILE = 0.9
MAX_THRESHOLD_IMAGES = 2000


def _probabilities(model: AnalysedModel, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(images.to(device)), dim=1).cpu()


def run_predict(ctx: StageContext, out: StageWriter) -> dict:
    """Predict every examined image and flag the true positives."""
    n, classes = len(ctx.data), ctx.model.num_classes
    probs = np.zeros((n, classes), dtype=np.float32)
    for part in ctx.batches(n, "predict"):
        probs[part] = _probabilities(ctx.model, ctx.data.images[part], ctx.device).numpy()
    labels = ctx.data.labels.numpy()
    pred = probs.argmax(1) if n else np.zeros(0, dtype=np.int64)
    true_positive = pred == labels
    out.array("dataset_index", np.arange(n, dtype=np.int64))
    out.array("label", labels.astype(np.int64))
    out.array("pred", pred.astype(np.int64))
    out.array("probs", probs)
    out.array("true_positive", true_positive)
    accuracy = float(true_positive.mean()) if n else 0.0
    out.attrs(examined=n, true_positives=int(true_positive.sum()), accuracy=accuracy)
    logger.info("predict: %d of %d images correctly predicted (accuracy %.4f)", true_positive.sum(), n, accuracy)
    return {"accuracy": accuracy}


def _make_attack(ctx: StageContext):
    cfg = ctx.config
    if cfg.attack == "pgd":
        return PGD(ctx.model, cfg.eps, cfg.alpha, cfg.steps, cfg.norm, cfg.random_start, cfg.targeted, cfg.seed)
    if cfg.attack == "fgsm":
        return FGSM(ctx.model, cfg.eps, cfg.targeted)
    if cfg.attack == "file":
        if not cfg.adversarial_file:
            raise AttackError("--attack file needs --adversarial FILE.npz")
        return PrecomputedAttack(cfg.adversarial_file, ctx.model.input_shape)
    raise AttackError(f"unknown attack {cfg.attack!r}; use pgd, fgsm or file")


def _targets(ctx: StageContext, labels: torch.Tensor) -> torch.Tensor:
    """Attack labels: true labels, or for targeted attacks the target class (default: next class)."""
    if not ctx.config.targeted:
        return labels
    if ctx.config.target_class is not None:
        return torch.full_like(labels, ctx.config.target_class)
    return (labels + 1) % ctx.model.num_classes


def _attack_shard(shared: dict, part: slice, inputs: tuple[torch.Tensor, torch.Tensor]) -> dict[str, np.ndarray]:
    """One batch of the attack stage (an executor task): the adversarial images of rows ``part``.

    Shape:
        inputs: the rows' benign images (n, c, H, W) in [0, 1] and attack labels (n,) int64.
    """
    attack = shared["attack"]
    if isinstance(attack, PGD):
        attack.reseed(shared["seed"] * 1_000_003 + part.start)
    device = torch.device(shared["device"])
    benign, target = inputs
    adversarial = attack(benign.to(device), target.to(device))
    return {"adversarial": adversarial.cpu().numpy()}


def run_attack(ctx: StageContext, out: StageWriter) -> dict:
    """Attack the true positives and record predictions, perturbation sizes and success.

    The batches run on the configured executor (``--executor local|ray``): each is a task computing its
    adversarial images, checkpointed as it finishes, so a killed run resumes with the missing batches.
    """
    predict = ctx.store().group("predict")
    rows = np.flatnonzero(predict["true_positive"][:])
    indices = predict["dataset_index"][:][rows]
    labels = torch.from_numpy(predict["label"][:][rows])
    benign = ctx.data.images[torch.from_numpy(indices)] if len(rows) else ctx.data.images[:0]
    count, classes = len(rows), ctx.model.num_classes
    attack = _make_attack(ctx)
    adversarial = torch.zeros_like(benign)
    attacked = np.ones(count, dtype=bool)
    adv_probs = np.zeros((count, classes), dtype=np.float32)
    parts = shards(count, ctx.config.batch_size)
    if isinstance(attack, PrecomputedAttack):
        for part in parts:
            adversarial[part], attacked[part] = attack.lookup(indices[part])
    else:
        shared = {"attack": attack, "seed": ctx.config.seed, "device": str(ctx.device)}
        target = _targets(ctx, labels)
        for part, result in run_sharded(ctx.executor, _attack_shard, shared, parts, ctx.work_dir("attack"),
                                        "attack", inputs=lambda part: (benign[part], target[part])):
            adversarial[part] = torch.from_numpy(result["adversarial"])
    for part in tqdm(parts, desc="attack predictions", unit="batch", disable=len(parts) < 2):
        adv_probs[part] = _probabilities(ctx.model, adversarial[part], ctx.device).numpy()
    adv_pred = adv_probs.argmax(1) if count else np.zeros(0, dtype=np.int64)
    label_np = labels.numpy()
    success = attacked & (adv_pred != label_np)
    if ctx.config.targeted and ctx.config.attack != "file":
        success &= adv_pred == _targets(ctx, labels).numpy()
    delta = (adversarial - benign).flatten(1)
    out.array("dataset_index", indices.astype(np.int64))
    out.array("label", label_np.astype(np.int64))
    out.array("benign", benign.numpy(), chunks=(256, *benign.shape[1:]))
    out.array("adversarial", adversarial.numpy(), chunks=(256, *benign.shape[1:]))
    out.array("benign_pred", predict["pred"][:][rows].astype(np.int64))
    out.array("benign_probs", predict["probs"][:][rows])
    out.array("adv_pred", adv_pred.astype(np.int64))
    out.array("adv_probs", adv_probs)
    out.array("l2", delta.norm(dim=1).numpy().astype(np.float32))
    out.array("linf", delta.abs().amax(dim=1).numpy().astype(np.float32) if count else np.zeros(0, np.float32))
    out.array("attacked", attacked)
    out.array("success", success)
    rate = float(success.sum() / max(attacked.sum(), 1))
    out.attrs(attack=attack.config(), attacked=int(attacked.sum()), successes=int(success.sum()), success_rate=rate)
    logger.info("attack: %d of %d true positives fooled (success rate %.4f)", success.sum(), attacked.sum(), rate)
    return {"success_rate": rate}


def _analysed_shapes(ctx: StageContext) -> tuple[tuple[int, ...], int]:
    """Shape (K, h, w) of the analysed layer's maps and length D of the pooled vector, from one probe."""
    with torch.no_grad():
        probe = ctx.model.activations(torch.zeros(1, *ctx.model.input_shape, device=ctx.device))
    return tuple(probe.feature_maps.shape[1:]), int(probe.pooled.shape[1])


def _activations_shard(shared: dict, part: slice, images: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """One batch of the activations stage (an executor task): pooled vectors, feature maps and their spatial
    maxima of the benign and the adversarial images of the pairs ``part``.

    Shape:
        images: benign and adversarial (n, c, H, W) float32. Returns ``{side}_pooled`` (n, D),
        ``{side}_maps`` (n, K, h, w), ``{side}_max`` (n, K), float32, for side ``benign`` and ``adv``.
    """
    model, device = shared["model"], torch.device(shared["device"])
    result = {}
    for side, batch in zip(("benign", "adv"), images):
        with torch.no_grad():
            acts = model.activations(torch.from_numpy(batch).to(device))
        maps = acts.feature_maps.float().cpu()
        result[f"{side}_pooled"] = acts.pooled.float().cpu().numpy()
        result[f"{side}_maps"] = maps.numpy()
        result[f"{side}_max"] = maps.flatten(2).amax(2).numpy()
    return result


def run_activations(ctx: StageContext, out: StageWriter) -> dict:
    """Record pooled vectors and analysed-layer feature maps of the successful pairs.

    The batches run on the configured executor (``--executor local|ray``), each reading its pairs' images
    from the attack stage when it starts; finished batches are checkpointed, so a killed run resumes with
    the missing ones.
    """
    attack = ctx.store().group("attack")
    rows = np.flatnonzero(attack["success"][:])
    count = len(rows)
    maps_shape, dim = _analysed_shapes(ctx)
    arrays = {}
    for side in ("benign", "adv"):
        arrays[f"{side}_pooled"] = out.empty(f"{side}_pooled", (count, dim), "float32", (max(count, 1), dim))
        arrays[f"{side}_maps"] = out.empty(f"{side}_maps", (count, *maps_shape), "float32", (16, *maps_shape))
        arrays[f"{side}_max"] = out.empty(f"{side}_max", (count, maps_shape[0]), "float32",
                                          (max(count, 1), maps_shape[0]))

    def images(part: slice) -> tuple[np.ndarray, np.ndarray]:
        return tuple(attack[source].get_orthogonal_selection((rows[part],)) for source in ("benign", "adversarial"))
    shared = {"model": ctx.model, "device": str(ctx.device)}
    for part, result in run_sharded(ctx.executor, _activations_shard, shared, shards(count, ctx.config.batch_size),
                                    ctx.work_dir("activations"), "activations", inputs=images):
        for name, values in result.items():
            arrays[name][part] = values
    out.array("row", rows.astype(np.int64))
    out.array("dataset_index", attack["dataset_index"][:][rows])
    out.attrs(analysed_layer=ctx.model.analysed_layer_name, dense_layer=ctx.model.dense_layer_name,
              feature_map_shape=list(maps_shape), pooled_dim=int(dim), pairs=count)
    return {"pairs": count}


def class_band_statistics(contributions: np.ndarray, labels: np.ndarray, classes: int) -> dict[str, np.ndarray]:
    """Mean, std, CI of the mean (:func:`advlens.measures.class_bands`) and percentiles of activation ×
    weight per class.

    Shape:
        contributions: (N, D) each image's pooled vector × its own class's weights; labels: (N,).
        returns class_count (C,), class_mean/std/lower/upper (C, D), class_percentiles (L, C, D).
    """
    dim = contributions.shape[1]
    count = np.bincount(labels, minlength=classes).astype(np.int64)
    mean = np.full((classes, dim), np.nan, np.float32)
    std = np.full((classes, dim), np.nan, np.float32)
    pct = np.full((len(PERCENTILE_LEVELS), classes, dim), np.nan, np.float32)
    for c in range(classes):
        values = contributions[labels == c]
        if len(values):
            mean[c] = values.mean(0)
            std[c] = values.std(0, ddof=1) if len(values) > 1 else 0.0
            pct[:, c] = np.percentile(values, PERCENTILE_LEVELS, axis=0)
    bands = measures.class_bands(mean, std, count, CLASS_CI_LEVEL)
    return {"class_count": count, "class_mean": mean, "class_std": std, "class_lower": bands.low.numpy(),
            "class_upper": bands.high.numpy(), "class_percentiles": pct}


def run_statistics(ctx: StageContext, out: StageWriter) -> dict:
    """Class bands over the benign true positives and per-neuron receptive-field thresholds."""
    attack = ctx.store().group("attack")
    labels = attack["label"][:]
    count, classes = len(labels), ctx.model.num_classes
    weight = ctx.model.dense_weight.float().cpu()
    sample = np.unique(np.linspace(0, count - 1, min(count, MAX_THRESHOLD_IMAGES)).round().astype(np.int64)) \
        if count else np.zeros(0, np.int64)
    contributions, sampled_maps = [], []
    for part in ctx.batches(count, "statistics"):
        images = torch.from_numpy(attack["benign"][part])
        with torch.no_grad():
            acts = ctx.model.activations(images.to(ctx.device))
        pooled = acts.pooled.float().cpu()
        contributions.append((pooled * weight[torch.from_numpy(labels[part])]).numpy())
        keep = sample[(sample >= part.start) & (sample < part.stop)] - part.start
        maps = acts.feature_maps.float().cpu()
        sampled_maps.append(maps[torch.from_numpy(keep)].numpy())
    dim = weight.shape[1]
    bands = class_band_statistics(np.concatenate(contributions) if contributions else np.zeros((0, dim), np.float32),
                                  labels, classes)
    for name, values in bands.items():
        out.array(name, values)
    out.array("dense_weight", weight.numpy())
    out.array("dense_bias", ctx.model.dense_bias.float().cpu().numpy())
    maps = np.concatenate(sampled_maps) if sampled_maps else np.zeros((0,), np.float32)
    if len(maps):  # (sampled images, K, h, w)
        quantiles = measures.feature_map_quantiles(maps, QUANTILE_LEVELS).numpy()
        neuron_mean, neuron_max = maps.mean((0, 2, 3)).astype(np.float32), maps.max((0, 2, 3)).astype(np.float32)
    else:
        channels = _analysed_shapes(ctx)[0][0]
        quantiles = np.zeros((len(QUANTILE_LEVELS), channels), np.float32)
        neuron_mean = neuron_max = np.zeros(channels, np.float32)
    out.array("neuron_quantiles", quantiles)
    out.array("neuron_threshold", quantiles[QUANTILE_LEVELS.index(DEFAULT_RF_QUANTILE)])
    out.array("neuron_mean", neuron_mean)
    out.array("neuron_max", neuron_max)
    out.attrs(ci_level=CLASS_CI_LEVEL, percentile_levels=list(PERCENTILE_LEVELS), band_kind=BAND_KIND,
              band_level=BAND_LEVEL,
              quantile_levels=list(QUANTILE_LEVELS), default_quantile=DEFAULT_RF_QUANTILE,
              threshold_images=int(len(sample)))
    return {}


def run_projections(ctx: StageContext, out: StageWriter) -> dict:
    """2-D t-SNE of the penultimate activations, one for benign and one for adversarial images."""
    activations = ctx.store().group("activations")
    for side in ("benign", "adv"):
        pooled = activations[f"{side}_pooled"][:]
        logger.info("projections: t-SNE of %d %s vectors", len(pooled), side)
        embedding = tsne_embedding(pooled, perplexity=ctx.config.tsne_perplexity, random_state=ctx.config.seed)
        out.array(f"{side}_tsne", embedding.astype(np.float32))
    out.attrs(method="openTSNE", perplexity=ctx.config.tsne_perplexity, random_state=ctx.config.seed)
    return {}


STAGES = (
    Stage("predict", (), run_predict, "predictions of every examined image; flags the true positives"),
    Stage("attack", ("predict",), run_attack, "adversarial images of the true positives; flags the successes"),
    Stage("activations", ("attack",), run_activations,
          "pooled vectors and analysed-layer maps of the successful pairs"),
    Stage("statistics", ("attack",), run_statistics,
          "class bands and per-neuron receptive-field thresholds over the benign true positives"),
    Stage("projections", ("activations",), run_projections, "t-SNE of the benign and adversarial pooled vectors"),
)
"""The paper-001 stages, each after the ones it needs."""
