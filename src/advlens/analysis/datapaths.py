"""paper 003's datapaths (AEVis, spec-003): a pair's datapath chain computed on demand and kept in the store, contribution analysis.

:class:`DatapathAnalysis` is mixed into :class:`advlens.analysis.Session`.
"""

from __future__ import annotations

from advlens.analysis.core import SessionCore


class DatapathAnalysis(SessionCore):
    """The datapaths part of a :class:`~advlens.analysis.Session`."""
