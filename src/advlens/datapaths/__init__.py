"""Datapaths (paper 003, AEVis): gated extraction, the adv → src → targets chain, critical sets,
contribution analysis and the diverging–merging evaluation. Pure computations on tensors and an
:class:`~advlens.models.adapter.AnalysedModel`; no store, no Dash."""

from advlens.datapaths.chain import DatapathChain, datapath_chain
from advlens.datapaths.contribution import Contribution, contribution
from advlens.datapaths.critical import CriticalSet, critical_set
from advlens.datapaths.evaluation import (default_r, diff_curve, evaluation_layers, layer_distances,
                                          pattern_detected, top_k_score)
from advlens.datapaths.extraction import Datapaths, extract_datapaths
from advlens.datapaths.gates import GateLayout, default_gate_layers, gate_layout, gated
from advlens.datapaths.region import source_region
from advlens.datapaths.river import RiverColumn, RiverLayout, RiverSegment, river_layout, river_positions, trend_runs
from advlens.datapaths.treemap import (Leaf, Rect, TreemapLayout, atom_parents, candidate_layout, candidates,
                                       eq6_cost, treemap_layout, venn_atoms)

__all__ = [
    "Contribution", "CriticalSet", "DatapathChain", "Datapaths", "GateLayout", "contribution", "critical_set",
    "datapath_chain", "default_gate_layers", "default_r", "diff_curve", "evaluation_layers", "extract_datapaths",
    "gate_layout", "gated", "layer_distances", "pattern_detected", "source_region", "top_k_score",
    "RiverColumn", "RiverLayout", "RiverSegment", "river_layout", "river_positions", "trend_runs", "Leaf", "Rect",
    "TreemapLayout", "atom_parents", "candidate_layout", "candidates", "eq6_cost", "treemap_layout", "venn_atoms",
]
