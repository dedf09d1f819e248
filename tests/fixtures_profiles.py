"""A session over the tiny test store with a hand-made profiles background, for the profiles analysis and
page tests.

The background is 60 generated images of ``tests/conftest.py``'s three classes; its "fit" of the tiny
model's default profile layers (post-activation convs and the logits) puts each image on each axis at its
first principal component of that layer's flattened activations (NumPy SVD). A stored fit is any (n, L)
array to the code under test, so the tests need no minute-long AlignedUMAP fit, and the positions are
known exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from advlens.analysis import Session
from advlens.analysis.profiles_data import ProfilesBackground
from advlens.profiles import default_profile_layers

BACKGROUND = 60
PARAMS = dict(n_neighbors=10, min_dist=0.1, alignment_regularisation=0.01, alignment_window_size=3, random_state=0,
              n_epochs=200)


def first_component(activations: np.ndarray) -> np.ndarray:
    """Each row's coordinate on the first principal axis of the rows (sign fixed by the first row).

    Shape: (n, …) → (n,) float32.
    """
    flat = activations.reshape(len(activations), -1).astype(np.float64)
    centred = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axis = vt[0] if vt[0] @ centred[0] >= 0 else -vt[0]
    return (centred @ axis).astype(np.float32)


def synthetic_background(model, images: np.ndarray, labels: np.ndarray, layers: list[str]) -> ProfilesBackground:
    """A :class:`ProfilesBackground` of ``images`` whose embeddings are each layer's first component."""
    with torch.no_grad():
        preds = model(torch.from_numpy(images)).argmax(1).numpy()
        captured = model.capture(torch.from_numpy(images), layers)
    embeddings = np.stack([first_component(captured[name].numpy()) for name in layers], axis=1)
    return ProfilesBackground(layers=tuple(layers), rows=np.arange(len(images), dtype=np.int64),
                              labels=labels.astype(np.int64), preds=preds.astype(np.int64),
                              images=images.astype(np.float32), embeddings=embeddings, params=dict(PARAMS))


def profiles_session(path, model) -> Session:
    """A session over a store with the synthetic background and fit in place of the profiles stage."""
    from conftest import tiny_dataset

    session = Session(path, model=model)
    data = tiny_dataset(200, seed=7)  # other images than the store's
    images = data.images[:BACKGROUND].numpy()
    labels = data.labels[:BACKGROUND].numpy().copy()
    labels[::7] = (labels[::7] + 1) % 3  # some "true" labels the model disagrees with: true ≠ predicted colouring
    background = synthetic_background(session.model, images, labels, default_profile_layers(session.model.graph))
    session.cache.get_or_compute(("profiles-background",), lambda: background)
    session.has_profiles = lambda: True  # the tiny store has no profiles stage; the background stands in
    return session


def with_selection_fits(session: Session) -> dict:
    """Stand-ins for the kept fits of other layer selections (the tiny store has no profiles stage to key them
    on): ``fit_profiles`` "fits" by first components and keeps the result in the returned dict, which
    ``profiles_selection`` reads. Returns that dict (layers tuple → (n, L) embeddings)."""
    kept: dict = {}
    own_selection = session.profiles_selection

    def selection(layers=None):
        layers = session.check_profile_layers(layers)
        if layers == session.profiles_background().layers:
            return own_selection(layers)
        return kept.get(layers)

    def fit(layers, progress=None):
        layers = session.check_profile_layers(layers)
        activations = session.background_activations(layers)
        for index, layer in enumerate(activations):
            if progress is not None:
                progress(index / len(activations), f"layer {index + 1} of {len(activations)}")
        kept[layers] = np.stack([first_component(a) for a in activations], axis=1)
        return kept[layers]

    session.profiles_selection = selection
    session.fit_profiles = fit
    return kept
