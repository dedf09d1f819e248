"""Pure computations of paper 001's measures: receptive fields, vulnerability maps, the image- and
neuron-perturbation measures, neuron clustering, context images and class subsets.

Functions take and return tensors or NumPy arrays (store arrays can be passed as they are read),
never touch the store or the app, and take the device as a parameter.
"""

from advlens.measures.bands import (
    BAND_KINDS,
    BAND_LEVELS,
    DEFAULT_BAND_KIND,
    DEFAULT_BAND_LEVEL,
    DEFAULT_CONFIDENCE,
    Bands,
    band_gap,
    band_regions,
    bands_of_kind,
    central_percentiles,
    check_band,
    class_bands,
    pair_band_gap,
    percentile_bands,
    rank_band_gap,
)
from advlens.measures.class_subsets import ClassSubset, attack_matrix, class_subsets
from advlens.measures.clustering import (
    DEFAULT_METHOD,
    DEFAULT_METRIC,
    METHODS,
    METRICS,
    NeuronClustering,
    combine_receptive_fields,
    default_method,
    neuron_distances,
    neuron_features,
    neuron_linkage,
    node_members,
    rf_images,
)
from advlens.measures.context import ContextImages, class_confidence, context_images, max_activations
from advlens.measures.iou import ImagePerturbationScores, image_perturbation_scores, iou
from advlens.measures.neuron_perturbation import (
    ContributionCurves,
    NeuronSubstitution,
    contribution_curves,
    contributions,
    neuron_substitution,
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
from advlens.measures.vulnerability_masks import VulnerabilityMasks, vulnerability_masks

__all__ = [
    # receptive fields (§3.2)
    "DEFAULT_RF_LEVEL", "feature_map_quantiles", "neuron_thresholds", "upsample_maps", "rf_masks",
    "receptive_fields", "apply_receptive_field",
    # vulnerability maps (Alg. 1)
    "VulnerabilityMaps", "window_masks", "vulnerability_grid", "vulnerability_maps", "grid_interpolation",
    "upsample_grid", "binarize_top", "VulnerabilityMasks", "vulnerability_masks",
    # image-perturbation measure
    "iou", "ImagePerturbationScores", "image_perturbation_scores",
    # neuron-perturbation measure
    "ContributionCurves", "NeuronSubstitution", "contributions", "contribution_curves", "neuron_substitution",
    # class bands and band gaps (§5.2.1, Fig. 4)
    "BAND_KINDS", "BAND_LEVELS", "DEFAULT_BAND_KIND", "DEFAULT_BAND_LEVEL", "DEFAULT_CONFIDENCE", "Bands", "check_band",
    "central_percentiles", "class_bands", "percentile_bands", "bands_of_kind", "band_gap", "pair_band_gap",
    "band_regions", "rank_band_gap",
    # clustering (§5.2.2)
    "METRICS", "METHODS", "DEFAULT_METRIC", "DEFAULT_METHOD", "default_method", "NeuronClustering", "rf_images",
    "neuron_features", "neuron_distances", "neuron_linkage", "node_members", "combine_receptive_fields",
    # context images (§5.3) and class subsets (§6.2.2)
    "ContextImages", "max_activations", "class_confidence", "context_images",
    "ClassSubset", "attack_matrix", "class_subsets",
    # rankings
    "rank_descending", "top_k",
]
