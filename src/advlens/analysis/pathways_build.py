"""Building a :class:`~advlens.analysis.pathways_graph.PathwayGraph` from a store's sweep (spec-004 §1–§5):
per-layer importances of every channel, the drawn nodes (four groups and pinned extras), and the edges'
influences over each image set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advlens.analysis.pathways_edges import plan_links, set_influences
from advlens.analysis.pathways_graph import PINNED, PathwayGraph
from advlens.analysis.pathways_sweep import SweepView
from advlens.models import AnalysedModel
from advlens.pathways import GROUPS, neuron_importance, rank_percentile, select_neurons


@dataclass(frozen=True)
class LayerTables:
    """Importances of every channel of one layer: (2, C) benign and (A, E, C) attacked (NaN: empty set)."""

    benign: np.ndarray
    attacked: np.ndarray


def median_or_nan(table: np.ndarray, channels: int) -> np.ndarray:
    """Importance (median over images) of a (N, C) table; NaN for an empty set. Shape: (C,)."""
    return neuron_importance(table) if len(table) else np.full(channels, np.nan)


def percentile_or_nan(values: np.ndarray) -> np.ndarray:
    """Rank percentile within the layer; NaN for an empty set. Shape: (C,) → (C,)."""
    return rank_percentile(values) if np.all(np.isfinite(values)) else np.full(values.shape, np.nan)


def subsample(rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` of ``rows``, drawn without replacement by a seeded generator, in their order."""
    if len(rows) <= limit:
        return rows
    chosen = np.random.default_rng(seed).choice(len(rows), size=limit, replace=False)
    return rows[np.sort(chosen)]


def layer_tables(sweep: SweepView, original: int, target: int) -> list[LayerTables]:
    """Importance of every channel of every layer for original, target and attacked(s) of every attack."""
    original_rows, target_rows = sweep.benign_rows(original), sweep.benign_rows(target)
    sample_rows = np.flatnonzero(sweep.sample_label == original)
    masks = sweep.attacked_rows(original, target)[:, :, sample_rows]  # (A, E, n)
    tables = []
    for layer, channels in enumerate(sweep.channels.tolist()):
        benign = np.stack([median_or_nan(sweep.benign_max(layer, original_rows), channels),
                           median_or_nan(sweep.benign_max(layer, target_rows), channels)])
        maxima = sweep.adv_max(layer, sample_rows)  # (A, E, n, C)
        attacked = np.full((*masks.shape[:2], channels), np.nan)
        for a, s in np.ndindex(*masks.shape[:2]):
            if masks[a, s].any():
                attacked[a, s] = neuron_importance(maxima[a, s][masks[a, s]])
        tables.append(LayerTables(benign, attacked))
    return tables


def select_nodes(sweep: SweepView, tables: list[LayerTables], attack: str, k_benign: int, k_attack: int,
                 pinned: list[tuple[int, int]]) -> tuple[list[int], list[int], list[int]]:
    """(layer, channel, group) of every drawn node: per layer, the four groups in :data:`GROUPS` order, each
    by its own importance high → low, then the pinned extras."""
    a = sweep.attack_index(attack)
    layers, channels, groups = [], [], []
    for layer, table in enumerate(tables):
        attacked = {s: table.attacked[a, s] for s in range(len(sweep.eps))
                    if np.all(np.isfinite(table.attacked[a, s]))}
        selected = select_neurons(table.benign[0], table.benign[1], attacked, k_benign, k_attack)
        score = {"original": table.benign[0], "both": table.benign.mean(0), "target": table.benign[1],
                 "attack": np.nanmax(table.attacked[a], axis=0) if attacked else table.benign[0]}
        for g, name in enumerate(GROUPS):
            members = selected.members(name)
            for channel in members[np.argsort(-score[name][members], kind="stable")].tolist():
                layers.append(layer), channels.append(channel), groups.append(g)
        drawn = set(selected.drawn.tolist())
        for pin_layer, channel in pinned:
            if pin_layer == layer and channel not in drawn:
                layers.append(layer), channels.append(channel), groups.append(PINNED)
    return layers, channels, groups


def build_graph(model: AnalysedModel, sweep: SweepView, tables: list[LayerTables], nodes: tuple, *, original: int,
                target: int, attack: str, targeted: bool, k_benign: int, k_attack: int, max_images: int,
                seed: int) -> PathwayGraph:
    """The graph of ``nodes`` (from :func:`select_nodes`): their importances and percentiles from ``tables``, and
    an edge between every drawn neuron of a layer and every drawn neuron of the next, with its median influence
    over original, target and attacked(s) of ``attack`` (at most ``max_images`` seeded images each)."""
    node_layer, node_channel, node_group = (np.asarray(v, dtype=np.int64) for v in nodes)
    a, strengths = sweep.attack_index(attack), len(sweep.eps)
    importance = np.empty((2, len(node_layer)), dtype=np.float32)
    percentile = np.empty_like(importance)
    attacked = np.empty((len(sweep.attacks), strengths, len(node_layer)), dtype=np.float32)
    attacked_percentile = np.empty_like(attacked)
    for layer, table in enumerate(tables):
        at = node_layer == layer
        picked = node_channel[at]
        importance[:, at] = table.benign[:, picked]
        percentile[:, at] = np.stack([percentile_or_nan(row) for row in table.benign])[:, picked]
        attacked[:, :, at] = table.attacked[:, :, picked]
        for i, s in np.ndindex(*table.attacked.shape[:2]):
            attacked_percentile[i, s, at] = percentile_or_nan(table.attacked[i, s])[picked]
    # edges: every drawn source × drawn target of adjacent layers, influence per set
    drawn = [node_channel[node_layer == layer] for layer in range(len(sweep.layers))]
    links = plan_links(model, sweep.layers, drawn)
    sets = influence_sets(sweep, original, target, a, max_images, seed)
    per_set = set_influences(model, links, [set_images(sweep, which, rows, a) for which, rows in sets])
    sources, targets, values = [], [], []
    for index, link in enumerate(links):
        src_nodes = np.flatnonzero(node_layer == index)
        tgt_nodes = np.flatnonzero(node_layer == index + 1)
        grid_t, grid_s = np.meshgrid(np.arange(len(tgt_nodes)), np.arange(len(src_nodes)), indexing="ij")
        sources.append(src_nodes[grid_s.ravel()]), targets.append(tgt_nodes[grid_t.ravel()])
        values.append(np.stack([influence[index].ravel() for influence in per_set]))
    counts = sweep.attacked_rows(original, target).sum(-1)
    return PathwayGraph(
        original=original, target=target, attack=attack, targeted=targeted, layers=tuple(sweep.layers),
        attacks=tuple(sweep.attacks), group_names=(*GROUPS, "pinned"), k_benign=k_benign, k_attack=k_attack,
        max_images=max_images, seed=seed, eps=sweep.eps.astype(np.float64),
        original_count=np.int64(len(sweep.benign_rows(original))),
        target_count=np.int64(len(sweep.benign_rows(target))), attacked_count=counts.astype(np.int64),
        influence_images=np.asarray([len(rows) for _, rows in sets], dtype=np.int64),
        channels=sweep.channels.copy(), node_layer=node_layer, node_channel=node_channel, node_group=node_group,
        importance=importance, attacked_importance=attacked, percentile=percentile,
        attacked_percentile=attacked_percentile,
        edge_source=np.concatenate(sources) if sources else np.zeros(0, np.int64),
        edge_target=np.concatenate(targets) if targets else np.zeros(0, np.int64),
        influence=(np.concatenate(values, axis=1) if values else np.zeros((2 + strengths, 0))).astype(np.float32),
        layer_method=np.asarray([link.method for link in links], dtype=np.int64))


def influence_sets(sweep: SweepView, original: int, target: int, attack: int, limit: int,
                   seed: int) -> list[tuple[str, np.ndarray]]:
    """(kind, rows) of the sets influences are computed on: original, target, attacked(s) per strength."""
    sample_rows = np.flatnonzero(sweep.sample_label == original)
    mask = sweep.attacked_rows(original, target)[attack]  # (E, S)
    sets = [("benign", subsample(sweep.benign_rows(original), limit, seed)),
            ("benign", subsample(sweep.benign_rows(target), limit, seed + 1))]
    for s in range(len(sweep.eps)):
        sets.append((f"attacked-{s}", subsample(np.intersect1d(sample_rows, np.flatnonzero(mask[s])), limit,
                                                seed + 2 + s)))
    return sets


def set_images(sweep: SweepView, which: str, rows: np.ndarray, attack: int) -> np.ndarray:
    """The images of a set of :func:`influence_sets`. Shape: (n, c, H, W) float32 in [0, 1]."""
    if which == "benign":
        return sweep.benign_images(rows)
    return sweep.attacked_images(attack, int(which.rsplit("-", 1)[1]), rows)


__all__ = ["LayerTables", "layer_tables", "select_nodes", "build_graph", "subsample", "median_or_nan",
           "percentile_or_nan"]
