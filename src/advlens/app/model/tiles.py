"""Images of the Model page, served by two Flask routes (browser-cached, encoded in memory):

- ``/model-features/<layer>/<channel>/<tile|large>.png``: a channel's feature visualisation;
- ``/model-features/<layer>/<channel>/example-<rank>.png``: the receptive-field patch of its rank-th
  dataset example.

``layer`` is the layer's position in ``session.features.layers()``; every number is checked against the
store (anything else is a 404) and nothing from the request reaches the file system.
"""

from __future__ import annotations

import numpy as np
from flask import Flask, Response, abort
from PIL import Image

from advlens.analysis import Session
from advlens.app.images import png_bytes, scale_factor, to_rgb, upscale
from advlens.errors import AdvlensError

SIZES = {"tile": 76, "large": 168}
EXAMPLE_SIZE = 84
ROUTE = "/model-features/<int:layer>/<int:channel>/<kind>.png"


def thumbnail(image: np.ndarray, target: int) -> bytes:
    """A (c, H, W) image in [0, 1] as a PNG of about ``target`` pixels: small images scaled up with
    nearest neighbour (pixels stay crisp), large ones scaled down (Lanczos)."""
    rgb = to_rgb(image)
    height, width = rgb.shape[:2]
    if max(height, width) <= target:
        return png_bytes(upscale(rgb, scale_factor(height, width, target)))
    ratio = target / max(height, width)
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    small = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8), mode="RGB").resize(size, Image.LANCZOS)
    return png_bytes(np.asarray(small, dtype=np.float32) / 255.0)


def feature_url(layer_index: int, channel: int, kind: str = "tile") -> str:
    return f"/model-features/{int(layer_index)}/{int(channel)}/{kind}.png"


def example_url(layer_index: int, channel: int, rank: int) -> str:
    return f"/model-features/{int(layer_index)}/{int(channel)}/example-{int(rank)}.png"


def image_bytes(session: Session, layer_index: int, channel: int, kind: str) -> bytes | None:
    """The PNG a route serves, or ``None`` when the request names nothing of the store."""
    try:
        library = session.features
    except AdvlensError:
        return None
    layers = library.layers()
    if not 0 <= layer_index < len(layers) or not 0 <= channel < library.num_channels(layers[layer_index]):
        return None
    layer = layers[layer_index]
    if kind in SIZES:
        return session.cache.get_or_compute(
            ("model-feature-png", layer, channel, kind),
            lambda: thumbnail(library.visualization(layer, channel), SIZES[kind]))
    if kind.startswith("example-") and kind[8:].isdigit():
        rank = int(kind[8:])
        examples = library.examples(layer, channel)
        if examples.patches is None or not 0 <= rank < len(examples.patches):
            return None
        return thumbnail(examples.patches[rank], EXAMPLE_SIZE)
    return None


def register_routes(server: Flask, session: Session) -> None:
    """Add the feature-image route to the Dash app's Flask server."""

    def feature_image(layer: int, channel: int, kind: str) -> Response:
        data = image_bytes(session, layer, channel, kind)
        if data is None:
            abort(404)
        response = Response(data, mimetype="image/png")
        response.headers["Cache-Control"] = "private, max-age=600"
        return response

    server.add_url_rule(ROUTE, endpoint="advlens_model_feature", view_func=feature_image, methods=["GET"])
    server.add_url_rule("/model-features/<path:rest>", endpoint="advlens_model_feature_404",
                        view_func=lambda rest: abort(404), methods=["GET"])
