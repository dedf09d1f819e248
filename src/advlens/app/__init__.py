"""The web app of the primary system (paper 001): ``create_app(session_or_store)``; ``advlens serve STORE``.

One module per view, each with ``layout(session)``, ``register(app, session)`` and the plain
functions behind its callbacks (figure and panel builders taking the session and ids).
"""

from advlens.app.factory import build_layout, create_app

__all__ = ["create_app", "build_layout"]
