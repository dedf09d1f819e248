"""t-SNE with openTSNE, deterministic for a given ``random_state``."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def tsne_embedding(vectors: np.ndarray, perplexity: float = 30.0, random_state: int = 0,
                   n_jobs: int = 1) -> np.ndarray:
    """Embed vectors in 2-D with openTSNE (PCA initialisation).

    Perplexity is lowered to (n − 1) / 3 for small n; fewer than 4 points are placed on a line.
    ``n_jobs=1`` keeps the result bit-for-bit reproducible.

    Shape:
        vectors: (N, D); returns (N, 2) float32.
    """
    from openTSNE import TSNE

    n = len(vectors)
    if n < 4:
        logger.warning("t-SNE needs at least 4 points, got %d; placing them on a line", n)
        return np.stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)], axis=1)
    perplexity = float(min(perplexity, (n - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, initialization="pca", random_state=random_state,
                n_jobs=n_jobs, verbose=False)
    return np.asarray(tsne.fit(np.asarray(vectors, dtype=np.float64)), dtype=np.float32)
