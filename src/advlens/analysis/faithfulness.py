"""every neuron ranking checked by intervention (issue 13): patch curves of a pair, what-if edits.

:class:`FaithfulnessAnalysis` is mixed into :class:`advlens.analysis.Session`.
"""

from __future__ import annotations

from advlens.analysis.core import SessionCore


class FaithfulnessAnalysis(SessionCore):
    """The faithfulness part of a :class:`~advlens.analysis.Session`."""
