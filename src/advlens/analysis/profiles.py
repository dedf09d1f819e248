"""paper 002's activation profiles (spec-002): the stored aligned fit, a pair's profiles, the Flow and Layer Views' data.

:class:`ProfilesAnalysis` is mixed into :class:`advlens.analysis.Session`.
"""

from __future__ import annotations

from advlens.analysis.core import SessionCore


class ProfilesAnalysis(SessionCore):
    """The profiles part of a :class:`~advlens.analysis.Session`."""
