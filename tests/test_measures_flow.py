"""The measures chained the way an analysis session calls them, with store-like NumPy arrays, on the
tiny seeded model of conftest (1×8×8 inputs, 6 neurons of 4×4), each value checked against an
independent computation: plain loops, NumPy/SciPy, Python sets and fractions, never the function under
test."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
from scipy import stats
from scipy.cluster import hierarchy
from scipy.spatial.distance import pdist

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

NEAR = 1e-5
"""Upsampled values this close to a threshold may fall either side in float32: not compared."""


# ------------------------------------------------------------------------- independent computations
def bilinear_upsample(feature_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear interpolation with half-pixel centres (``align_corners=False``), one pixel at a time."""
    h, w = feature_map.shape
    out = np.zeros((height, width))
    for y in range(height):
        sy = max((y + 0.5) * h / height - 0.5, 0.0)
        y0 = int(math.floor(sy))
        y1, ly = min(y0 + 1, h - 1), sy - y0
        for x in range(width):
            sx = max((x + 0.5) * w / width - 0.5, 0.0)
            x0 = int(math.floor(sx))
            x1, lx = min(x0 + 1, w - 1), sx - x0
            out[y, x] = ((1 - ly) * (1 - lx) * feature_map[y0, x0] + (1 - ly) * lx * feature_map[y0, x1]
                         + ly * (1 - lx) * feature_map[y1, x0] + ly * lx * feature_map[y1, x1])
    return out


def assert_rf_masks(masks: torch.Tensor, feature_maps: np.ndarray, thresholds: np.ndarray) -> None:
    """RF mask = upsampled map strictly above the neuron's threshold (§3.2), pixels near the cut excepted.

    Shape: masks (N, K, H, W) bool; feature_maps (N, K, h, w); thresholds (K,).
    """
    n, k, height, width = masks.shape
    for i in range(n):
        for neuron in range(k):
            upsampled = bilinear_upsample(feature_maps[i, neuron].astype(np.float64), height, width)
            clear = (np.abs(upsampled - thresholds[neuron]) > NEAR) | (upsampled == thresholds[neuron])  # e.g. 0 = 0
            expected = upsampled > thresholds[neuron]
            np.testing.assert_array_equal(masks[i, neuron].numpy()[clear], expected[clear], err_msg=f"{i}, {neuron}")


def alg1_loop(model, benign: torch.Tensor, adversarial: torch.Tensor, b: int, a: int, k: int):
    """Alg. 1 as written: substitute the window [i−k, i+k) × [j−k, j+k) (clipped), one forward pass each."""
    height, width = benign.shape[1:]
    bmap, amap = np.zeros((height, width)), np.zeros((height, width))
    with torch.no_grad():
        y = torch.softmax(model(benign[None]).double(), 1)[0]
        for i in range(height):
            for j in range(width):
                image = benign.clone()
                image[:, max(0, i - k):i + k, max(0, j - k):j + k] = adversarial[:, max(0, i - k):i + k,
                                                                                 max(0, j - k):j + k]
                y_sub = torch.softmax(model(image[None]).double(), 1)[0]
                bmap[i, j], amap[i, j] = float(y[b] - y_sub[b]), float(y_sub[a] - y[a])
    return bmap, amap


def top_percent(values: np.ndarray, percent: float) -> np.ndarray:
    """Pixels at least the ⌈p·n/100⌉-th largest value and strictly positive."""
    count = math.ceil(percent * values.size / 100)
    cut = np.sort(values.reshape(-1))[::-1][count - 1]
    return (values >= cut) & (values > 0)


def pixel_set(mask: np.ndarray) -> set[tuple[int, int]]:
    return {(int(r), int(c)) for r, c in zip(*np.nonzero(mask))}


def set_iou(a: set, b: set) -> Fraction:
    return Fraction(len(a & b), len(a | b)) if a | b else Fraction(0)


def softmax(logits: np.ndarray) -> np.ndarray:
    exps = np.exp(logits - logits.max())
    return exps / exps.sum()


# ------------------------------------------------------------------------------------------- the flow
def test_session_like_flow(tiny_model, tiny_data) -> None:
    model, images, labels = tiny_model, tiny_data.images, tiny_data.labels
    with torch.no_grad():
        acts = model.activations(images)
    maps_all = acts.feature_maps.numpy().astype(np.float64)
    weight = model.net[-1].weight.detach().double().numpy()  # the tiny net's Linear(6 → 3), read directly
    bias = model.net[-1].bias.detach().double().numpy()
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

    # a pair that the model reads as another class: a step along the sign of the class-mean difference
    benign = images[2]
    with torch.no_grad():
        benign_class = int(model(benign[None]).argmax())
    target = (benign_class + 1) % 3
    direction = images[labels == target].mean(0) - images[labels == benign_class].mean(0)
    adversarial = (benign + 0.3 * torch.sign(direction)).clamp(0, 1)
    with torch.no_grad():
        pair = model.activations(torch.stack([benign, adversarial]))
    benign_class, adversarial_class = int(pair.logits[0].argmax()), int(pair.logits[1].argmax())
    assert adversarial_class == target  # the "attack" succeeded
    pair_maps = pair.feature_maps.numpy().astype(np.float64)

    # --- receptive fields (§3.2): the 0.9 quantile of the neuron's values, shared by both images
    thresholds = neuron_thresholds(quantiles, levels)  # DEFAULT_RF_LEVEL = 0.9 is a stored level
    expected_thresholds = np.array([np.quantile(maps_all[correct.numpy(), n].reshape(-1), 0.9) for n in range(6)])
    np.testing.assert_allclose(thresholds.numpy(), expected_thresholds, rtol=0, atol=1e-5)
    rfs = receptive_fields(model, torch.stack([benign, adversarial]), thresholds)
    assert rfs.shape == (2, 6, 8, 8) and rfs.dtype == torch.bool
    assert_rf_masks(rfs, pair_maps, expected_thresholds)
    assert 0 < int(rfs.sum()) < rfs.numel()  # neither all empty nor all full

    # --- vulnerability maps (Alg. 1) and the image-perturbation measure
    k = 2
    bmap, amap = vulnerability_maps(model, benign, adversarial, benign_class, adversarial_class, k=k)
    expected_b, expected_a = alg1_loop(model, benign, adversarial, benign_class, adversarial_class, k)
    np.testing.assert_allclose(bmap.numpy(), expected_b, rtol=0, atol=1e-5)
    np.testing.assert_allclose(amap.numpy(), expected_a, rtol=0, atol=1e-5)
    # not vacuous (this tiny model puts all probability on two classes: aMap ≈ bMap here, unlike in the
    # 3-class toys of test_vulnerability_maps.py)
    assert expected_b.max() > 0.1 and expected_a.max() > 0.1
    bmap_mask, amap_mask = binarize_top(bmap), binarize_top(amap)
    np.testing.assert_array_equal(bmap_mask.numpy(), top_percent(bmap.numpy(), 20))
    np.testing.assert_array_equal(amap_mask.numpy(), top_percent(amap.numpy(), 20))
    scores = image_perturbation_scores(rfs[0], rfs[1], bmap_mask, amap_mask)
    for side, values, ranking, mask in ((0, scores.benign_iou, scores.benign_ranking, bmap_mask),
                                        (1, scores.adversarial_iou, scores.adversarial_ranking, amap_mask)):
        expected = [set_iou(pixel_set(rfs[side, n].numpy()), pixel_set(mask.numpy())) for n in range(6)]
        np.testing.assert_allclose(values.numpy(), [float(f) for f in expected], rtol=0, atol=1e-6)
        assert ranking.tolist() == sorted(range(6), key=lambda n: (-expected[n], n))  # highest IoU, then index
    assert float(scores.benign_iou.max()) > 0 and int((scores.adversarial_iou > 0).sum()) >= 3  # not all zero

    # --- neuron-perturbation measure: curves, class bands, band gap (§5.2.1)
    pooled = pair_maps.mean(axis=(2, 3))  # global average pooling of the analysed layer's maps
    curves = contribution_curves(pair.pooled[0], pair.pooled[1], model.dense_weight, benign_class, adversarial_class)
    np.testing.assert_allclose(curves.benign.numpy(), pooled[0] * weight[benign_class], rtol=0, atol=1e-5)
    np.testing.assert_allclose(curves.adversarial.numpy(), pooled[1] * weight[adversarial_class], rtol=0, atol=1e-5)
    gap = pair_band_gap(class_bands(mean, std, count), benign_class, adversarial_class)
    half = [stats.t.ppf(0.975, count[c] - 1) * std[c].astype(np.float64) / math.sqrt(count[c]) for c in range(3)]
    low_b, high_b = mean[benign_class] - half[benign_class], mean[benign_class] + half[benign_class]
    low_a, high_a = mean[adversarial_class] - half[adversarial_class], mean[adversarial_class] + half[adversarial_class]
    expected_gap = [high_a[n] - low_b[n] if low_b[n] > high_a[n] else low_a[n] - high_b[n] if low_a[n] > high_b[n]
                    else 0.0 for n in range(6)]
    np.testing.assert_allclose(gap.numpy(), expected_gap, rtol=0, atol=1e-4)
    assert any(g > 0 for g in expected_gap) and any(g < 0 for g in expected_gap)  # both signs occur
    tiebreak = (curves.adversarial - curves.benign).numpy()
    order = rank_band_gap(gap, tiebreak=tiebreak)
    assert order.tolist() == sorted(range(6), key=lambda n: (-expected_gap[n], -tiebreak[n], n))

    # --- direct substitution of one pooled activation at a time, through the dense head
    direct = neuron_substitution(model, pair.pooled[0], pair.pooled[1], benign_class, adversarial_class)
    base = softmax(weight @ pooled[0] + bias)
    for n in range(6):
        substituted = pooled[0].copy()
        substituted[n] = pooled[1, n]
        probabilities = softmax(weight @ substituted + bias)
        assert abs(float(direct.benign_drop[n]) - (base[benign_class] - probabilities[benign_class])) < 1e-5
        assert abs(float(direct.adversarial_rise[n]) - (probabilities[adversarial_class]
                                                        - base[adversarial_class])) < 1e-5

    # --- clustering (§5.2.2): 1 − IoU of the concatenated benign/adversarial RF masks, average linkage
    clustering = NeuronClustering(metric="rf_iou", method="average").fit(rfs[0], rfs[1])
    features = np.concatenate([rfs[0].reshape(6, -1).numpy(), rfs[1].reshape(6, -1).numpy()], axis=1)
    expected_linkage = hierarchy.linkage(pdist(features, "jaccard"), method="average")  # 1 − |A∩B| / |A∪B|
    np.testing.assert_allclose(clustering.linkage_, expected_linkage, rtol=0, atol=1e-9)
    node = 2 * 6 - 3  # the last merge below the root
    tree_nodes = hierarchy.to_tree(expected_linkage, rd=True)[1]  # SciPy's nodes, indexed by id
    members = clustering.members(node)
    assert members.tolist() == sorted(tree_nodes[node].pre_order())
    union = combine_receptive_fields(rfs, members)
    np.testing.assert_array_equal(union.numpy(), rfs.numpy()[:, members].any(axis=1))

    # --- context images (§5.3): top m by the neuron's maximal activation / by confidence
    probabilities = torch.softmax(acts.logits, 1)
    neuron, m = 4, 4
    context = context_images(neuron, max_activations(acts.feature_maps), class_confidence(probabilities, predictions),
                             m=m, benign_maps=acts.feature_maps, threshold=thresholds, size=(8, 8))
    peaks = maps_all[:, neuron].max(axis=(1, 2))
    assert len(set(np.sort(peaks)[-m - 1:])) == m + 1  # a live neuron: its top m + 1 peaks all differ
    confidence = probabilities.numpy()[np.arange(len(images)), predictions.numpy()]
    assert context.benign.tolist() == sorted(range(len(images)), key=lambda i: (-peaks[i], i))[:m]
    assert context.adversarial.tolist() == sorted(range(len(images)), key=lambda i: (-confidence[i], i))[:m]
    np.testing.assert_allclose(context.benign_scores, peaks[context.benign], rtol=0, atol=1e-6)
    assert context.benign_rfs.shape == (m, 8, 8)
    assert_rf_masks(context.benign_rfs[:, None], maps_all[context.benign][:, [neuron]],
                    expected_thresholds[[neuron]])
