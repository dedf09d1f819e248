"""The web app: ``create_app(session_or_store)``; ``advlens serve STORE``.

A shell (header, navigation, URL state) and one sub-package per page: :mod:`advlens.app.neurons`
(paper 001's five views), :mod:`advlens.app.model`, :mod:`advlens.app.pathways`,
:mod:`advlens.app.profiles`, :mod:`advlens.app.datapaths`.
"""

from advlens.app.factory import build_layout, create_app

__all__ = ["create_app", "build_layout"]
