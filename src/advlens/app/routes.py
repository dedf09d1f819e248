"""The one Flask route that serves images: ``/pair-image/<int:pair>/<side>.png``.

Only items of the store are served: ``pair`` must lie in ``[0, P)`` and ``side`` be ``benign`` or
``adversarial``; anything else is a 404. Nothing from the request reaches the file system: the pair id
indexes the store's arrays and the PNG is encoded in memory.
"""

from __future__ import annotations

from flask import Flask, Response, abort

from advlens.analysis import Session
from advlens.app.images import image_png

SIDES = ("benign", "adversarial")
ROUTE = "/pair-image/<int:pair>/<side>.png"


def pair_image_url(pair: int, side: str) -> str:
    return f"/pair-image/{int(pair)}/{side}.png"


def register_routes(server: Flask, session: Session) -> None:
    """Add the pair-image route to the Dash app's Flask server."""

    def pair_image(pair: int, side: str) -> Response:
        if side not in SIDES or not 0 <= pair < session.num_pairs:
            abort(404)
        benign, adversarial = session.pair_images([pair])
        image = benign[0] if side == "benign" else adversarial[0]
        response = Response(image_png(image), mimetype="image/png")
        response.headers["Cache-Control"] = "private, max-age=600"
        return response

    def not_found(rest: str) -> Response:  # keeps Dash's catch-all page route off this prefix
        abort(404)

    server.add_url_rule(ROUTE, endpoint="advlens_pair_image", view_func=pair_image, methods=["GET"])
    server.add_url_rule("/pair-image/<path:rest>", endpoint="advlens_pair_image_404", view_func=not_found,
                        methods=["GET"])
