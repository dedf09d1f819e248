"""Every neuron ranking checked by intervention (issue 13): patch curves of a layer's top-k channels, their
normalised area, flips, and the baseline orders; what-if edits of a layer's channels. Pure computations on tensors and an
:class:`~advlens.models.adapter.AnalysedModel`; no store, no Dash."""

from advlens.faithfulness.auc import MIN_EFFECT, flip_k, flipped_within, grid_area, normalised, patch_auc
from advlens.faithfulness.baselines import (DIFFERENCE_REDUCTIONS, difference_ranking, difference_scores,
                                            order_by_score, random_rankings)
from advlens.faithfulness.curves import (MODES, PatchCurve, check_ranking, default_ks, feeds_head_alone,
                                         patch_curve)
from advlens.faithfulness.what_if import (EDIT_MODES, EDITED_SIDE, PairEdit, PairRecord, WhatIf, check_channels,
                                          edit_pair, record_pair, what_if)
from advlens.faithfulness.multi_layer import (LayersEdit, LayersRecord, check_layer_channels, edit_layers,
                                              record_layers, what_if_layers)

__all__ = [
    "DIFFERENCE_REDUCTIONS", "MIN_EFFECT", "MODES", "PatchCurve", "check_ranking", "default_ks",
    "difference_ranking", "difference_scores", "feeds_head_alone", "flip_k", "flipped_within", "grid_area",
    "normalised", "order_by_score", "patch_auc", "patch_curve", "random_rankings", "what_if", "edit_pair",
    "record_pair", "check_channels", "WhatIf", "PairEdit", "PairRecord", "EDIT_MODES", "EDITED_SIDE",
    "LayersEdit", "LayersRecord", "check_layer_channels", "edit_layers", "record_layers", "what_if_layers",
]
