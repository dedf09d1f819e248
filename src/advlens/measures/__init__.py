"""Pure computations of paper 001's measures: receptive fields, vulnerability maps, the image- and
neuron-perturbation measures, neuron clustering, context images and class subsets.

Functions take and return tensors or NumPy arrays (store arrays can be passed as they are read),
never touch the store or the app, and take the device as a parameter.
"""

from advlens.measures.class_subsets import ClassSubset, attack_matrix, class_subsets
from advlens.measures.clustering import (
    METRICS,
    NeuronClustering,
    combine_receptive_fields,
    neuron_distances,
    neuron_features,
    neuron_linkage,
    node_members,
)
from advlens.measures.context import ContextImages, class_confidence, context_images, max_activations
from advlens.measures.iou import ImagePerturbationScores, image_perturbation_scores, iou
from advlens.measures.neuron_perturbation import (
    DEFAULT_CONFIDENCE,
    Bands,
    ContributionCurves,
    NeuronSubstitution,
    band_gap,
    class_bands,
    contribution_curves,
    contributions,
    neuron_substitution,
    pair_band_gap,
    percentile_bands,
    rank_band_gap,
)
from advlens.measures.ranking import rank_descending, top_k
from advlens.measures.receptive_fields import (
    DEFAULT_RF_LEVEL,
    apply_receptive_field,
    feature_map_quantiles,
    neuron_thresholds,
    receptive_fields,
    rf_masks,
    upsample_maps,
)
from advlens.measures.vulnerability import (
    VulnerabilityMaps,
    binarize_top,
    grid_interpolation,
    upsample_grid,
    vulnerability_grid,
    vulnerability_maps,
    window_masks,
)

__all__ = [
    # receptive fields (§3.2)
    "DEFAULT_RF_LEVEL", "feature_map_quantiles", "neuron_thresholds", "upsample_maps", "rf_masks",
    "receptive_fields", "apply_receptive_field",
    # vulnerability maps (Alg. 1)
    "VulnerabilityMaps", "window_masks", "vulnerability_grid", "vulnerability_maps", "grid_interpolation",
    "upsample_grid", "binarize_top",
    # image-perturbation measure
    "iou", "ImagePerturbationScores", "image_perturbation_scores",
    # neuron-perturbation measure
    "DEFAULT_CONFIDENCE", "Bands", "ContributionCurves", "NeuronSubstitution", "contributions",
    "contribution_curves", "class_bands", "percentile_bands", "band_gap", "pair_band_gap", "rank_band_gap",
    "neuron_substitution",
    # clustering (§5.2.2)
    "METRICS", "NeuronClustering", "neuron_features", "neuron_distances", "neuron_linkage", "node_members",
    "combine_receptive_fields",
    # context images (§5.3) and class subsets (§6.2.2)
    "ContextImages", "max_activations", "class_confidence", "context_images",
    "ClassSubset", "attack_matrix", "class_subsets",
    # rankings
    "rank_descending", "top_k",
]
