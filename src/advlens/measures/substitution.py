"""The loop shared by the perturbation measures: forward batches of substituted inputs and record
how the benign and the adversarial class probabilities move against the unmodified input."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


@torch.no_grad()
def probability_changes(forward: Callable[[torch.Tensor], torch.Tensor], baseline: torch.Tensor,
                        batches: Iterable[tuple[torch.Tensor, torch.Tensor]], count: int, benign_class: int,
                        adversarial_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax changes of substituted inputs: ``y_b − y'_b`` and ``y'_a − y_a`` (positive = vulnerable).

    ``batches`` yields ``(index, inputs)``: the output positions (into 0 … count−1) and the substituted
    inputs for them. The unmodified ``baseline`` rides along in the first batch, so both use the same
    arithmetic and an input equal to the baseline gives exactly 0.

    Shape:
        baseline: one input (…); each batch: index (B,), inputs (B, …); returns two float32 (count,).
    """
    device = baseline.device
    benign_probs = torch.empty(count, device=device)
    adversarial_probs = torch.empty(count, device=device)
    base: torch.Tensor | None = None
    for index, inputs in batches:
        if base is None:
            inputs = torch.cat([baseline.unsqueeze(0), inputs])
        probs = torch.softmax(forward(inputs).float(), dim=1)
        if base is None:
            base, probs = probs[0], probs[1:]
        benign_probs[index] = probs[:, benign_class]
        adversarial_probs[index] = probs[:, adversarial_class]
    if base is None:  # nothing substituted
        base = torch.softmax(forward(baseline.unsqueeze(0)).float(), dim=1)[0]
    return base[benign_class] - benign_probs, adversarial_probs - base[adversarial_class]
