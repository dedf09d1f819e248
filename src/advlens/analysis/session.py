"""``Session``: every per-selection computation of the app, over one analysis store.

The app and a notebook call the same methods; results are cached in a bounded LRU cache keyed by
the arguments. ``Session`` combines the shared core (:class:`~advlens.analysis.core.SessionCore`:
store, model, cache, id checks) with paper 001's image space
(:class:`~advlens.analysis.image_space.ImageSpace`) and neuron space
(:class:`~advlens.analysis.neurons.NeuronAnalysis`), and paper 004's class-level activation pathways
(:class:`~advlens.analysis.pathways.PathwayAnalysis`) and their what-if edits
(:class:`~advlens.analysis.pathways_what_if.PathwaysWhatIfAnalysis`), paper 002's activation profiles
(:class:`~advlens.analysis.profiles.ProfilesAnalysis`), paper 003's datapaths
(:class:`~advlens.analysis.datapaths.DatapathAnalysis`) and the intervention checks
(:class:`~advlens.analysis.faithfulness.FaithfulnessAnalysis`), each on the same core.
"""

from __future__ import annotations

from advlens.analysis.image_space import SORT_ORDERS, ImageSpace
from advlens.analysis.neurons import NEURON_MEASURES, NeuronAnalysis
from advlens.analysis.datapaths import DatapathAnalysis
from advlens.analysis.faithfulness import FaithfulnessAnalysis
from advlens.analysis.pathways import PathwayAnalysis
from advlens.analysis.pathways_what_if import PathwaysWhatIfAnalysis
from advlens.analysis.profiles import ProfilesAnalysis

__all__ = ["Session", "SORT_ORDERS", "NEURON_MEASURES"]


class Session(ImageSpace, NeuronAnalysis, PathwayAnalysis, PathwaysWhatIfAnalysis, ProfilesAnalysis, DatapathAnalysis,
              FaithfulnessAnalysis):
    """Cached analysis of one store: the four systems (papers 001–004) and the intervention checks.

    ``Session(store, model=None, *, device=None, cache_size=128, trust_store_code=False)``; see
    :class:`~advlens.analysis.core.SessionCore` for the arguments (a given model is never moved; a
    store-named model that is not built in is only loaded with ``trust_store_code=True``).
    """
