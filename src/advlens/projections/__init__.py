"""2-D projections of activation vectors."""

from advlens.projections.tsne import tsne_embedding

__all__ = ["tsne_embedding"]
