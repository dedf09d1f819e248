"""Activation pathways (Bluff, paper 004; spec-004): pure measures, no store and no app.

Neuron importance and its rank percentile, the four drawn neuron groups, excitation and the highlight
modes, connection influence by Bluff's kernel estimator (one convolution) or by gradient × activation
(any two layers), their aggregation over images, and which layers and estimator to use.
"""

from advlens.pathways.aggregate import median_over
from advlens.pathways.excitation import excitation
from advlens.pathways.gradient import grad_x_act_influence
from advlens.pathways.groups import GROUP_COLORS, GROUPS, NeuronGroups, select_neurons
from advlens.pathways.highlight import HIGHLIGHT_MODES, highlight, highlight_count
from advlens.pathways.importance import neuron_importance, rank_percentile
from advlens.pathways.kernel import kernel_influence
from advlens.pathways.layers import default_pathway_layers, joining_convolution

__all__ = [
    "GROUPS", "GROUP_COLORS", "HIGHLIGHT_MODES", "NeuronGroups", "default_pathway_layers", "excitation",
    "grad_x_act_influence", "highlight", "highlight_count", "joining_convolution", "kernel_influence",
    "median_over", "neuron_importance", "rank_percentile", "select_neurons",
]
