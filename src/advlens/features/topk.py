"""Per-channel running top-k over a stream of batches, in memory bounded by k × channels.

Each batch's scores are merged with the k best so far by a stable descending sort, so equal scores
keep stream order: among ties the earlier item ranks first, whatever the batch boundaries.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class RunningTopK:
    """The k highest scores of each channel seen so far, with the stream index of their items.

    Attributes:
        values: (k', C) best scores, best first (k' = min(k, items seen)).
        indices: (k', C) int64 stream index of each score's item.
        seen: items seen so far.
    """

    def __init__(self, k: int, channels: int, device: torch.device | str | None = None) -> None:
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        self.k = k
        self.values = torch.empty(0, channels, device=device)
        self.indices = torch.empty(0, channels, dtype=torch.long, device=device)
        self.seen = 0

    def update(self, scores: torch.Tensor) -> torch.Tensor:
        """Merge one batch's scores; return where each new entry comes from.

        Shape:
            scores: (B, C), row b is stream item ``seen + b``. Returns ``source`` (k', C) int64: an entry
            ``< k0`` (k0 = rows kept before this update) is the previous row ``source``, an entry ``≥ k0``
            is batch row ``source − k0``.
        """
        merged = torch.cat([self.values, scores.to(self.values.dtype)])
        order = torch.sort(merged, dim=0, descending=True, stable=True).indices[: self.k]
        batch_index = torch.arange(self.seen, self.seen + scores.shape[0], device=scores.device)
        all_indices = torch.cat([self.indices, batch_index[:, None].expand_as(scores)])
        self.values = merged.gather(0, order)
        self.indices = all_indices.gather(0, order)
        self.seen += scores.shape[0]
        return order


def merge_payload(previous: torch.Tensor, source: torch.Tensor, kept: int,
                  fresh: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Rearrange a per-entry payload after :meth:`RunningTopK.update`, computing only new entries.

    ``fresh(batch_rows, channels)`` returns the payload of the new entries, one per (batch row,
    channel) pair; kept entries are moved from ``previous``.

    Shape:
        previous: (k0, C, ...) payload before the update; source: (k', C) from ``update``.
        Returns (k', C, ...).
    """
    channels = torch.arange(source.shape[1], device=source.device).expand_as(source)
    is_new = source >= kept
    new_payload = fresh(source[is_new] - kept, channels[is_new])
    out = new_payload.new_empty(source.shape + new_payload.shape[1:])
    out[is_new] = new_payload
    if kept:
        out[~is_new] = previous[source[~is_new], channels[~is_new]]
    return out
