"""The measures chained the way an analysis session calls them, with store-like NumPy arrays, on the
tiny seeded model of conftest (1×8×8 inputs, 6 neurons of 4×4)."""

from __future__ import annotations

import numpy as np
import torch

from advlens.measures import (
    NeuronClustering,
    binarize_top,
    class_bands,
    class_confidence,
    combine_receptive_fields,
    context_images,
    contribution_curves,
    feature_map_quantiles,
    image_perturbation_scores,
    max_activations,
    neuron_substitution,
    neuron_thresholds,
    pair_band_gap,
    rank_band_gap,
    receptive_fields,
    vulnerability_maps,
)


def test_session_like_flow(tiny_model, tiny_data) -> None:
    model, images, labels = tiny_model, tiny_data.images, tiny_data.labels
    with torch.no_grad():
        acts = model.activations(images)
    predictions = acts.logits.argmax(1)
    correct = predictions == labels
    # store-like statistics, as NumPy float32
    levels = np.array([0.5, 0.75, 0.9, 0.95], dtype=np.float32)
    quantiles = feature_map_quantiles(acts.feature_maps[correct], levels).numpy()
    contrib = (acts.pooled * model.dense_weight[labels])[correct].numpy()
    good = labels[correct].numpy()
    mean = np.stack([contrib[good == c].mean(0) for c in range(3)]).astype(np.float32)
    std = np.stack([contrib[good == c].std(0, ddof=1) for c in range(3)]).astype(np.float32)
    count = np.bincount(good, minlength=3)

    benign = images[1]
    adversarial = (benign + 0.3 * torch.sign(torch.randn(benign.shape, generator=torch.Generator().manual_seed(0))))
    adversarial = adversarial.clamp(0, 1)
    with torch.no_grad():
        pair = model.activations(torch.stack([benign, adversarial]))
    benign_class, adversarial_class = int(pair.logits[0].argmax()), int(pair.logits[1].argmax())
    if adversarial_class == benign_class:
        adversarial_class = (benign_class + 1) % 3

    thresholds = neuron_thresholds(quantiles, levels)  # DEFAULT_RF_LEVEL = 0.9 is a stored level
    rfs = receptive_fields(model, torch.stack([benign, adversarial]), thresholds)
    assert rfs.shape == (2, 6, 8, 8) and rfs.dtype == torch.bool

    bmap, amap = vulnerability_maps(model, benign, adversarial, benign_class, adversarial_class, k=1)
    scores = image_perturbation_scores(rfs[0], rfs[1], binarize_top(bmap), binarize_top(amap))
    for values, ranking in ((scores.benign_iou, scores.benign_ranking),
                            (scores.adversarial_iou, scores.adversarial_ranking)):
        assert torch.all((values >= 0) & (values <= 1))
        assert sorted(ranking.tolist()) == list(range(6))
        assert np.all(np.diff(values.numpy()[ranking]) <= 0)

    curves = contribution_curves(pair.pooled[0], pair.pooled[1], model.dense_weight, benign_class, adversarial_class)
    gap = pair_band_gap(class_bands(mean, std, count), benign_class, adversarial_class)
    order = rank_band_gap(gap, tiebreak=(curves.adversarial - curves.benign).numpy())
    assert sorted(order.tolist()) == list(range(6)) and np.all(np.diff(gap.numpy()[order]) <= 0)
    direct = neuron_substitution(model, pair.pooled[0], pair.pooled[1], benign_class, adversarial_class)
    assert direct.benign_drop.shape == (6,) and torch.isfinite(direct.adversarial_rise).all()

    clustering = NeuronClustering().fit(rfs[0], rfs[1])
    members = clustering.members(2 * 6 - 3)  # one of the root's subtrees or a deep merge
    union = combine_receptive_fields(rfs, members)
    assert union.shape == (2, 8, 8)

    probabilities = torch.softmax(acts.logits, 1)
    context = context_images(2, max_activations(acts.feature_maps), class_confidence(probabilities, predictions),
                             m=4, benign_maps=acts.feature_maps, threshold=thresholds, size=(8, 8))
    assert len(context.benign) == 4 and context.benign_rfs.shape == (4, 8, 8)
