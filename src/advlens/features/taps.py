"""Forward passes that record some layers' outputs and stop as soon as all of them are recorded.

Feature visualisation and dataset examples only need the network up to the layers they look at, so
the rest of the forward pass is skipped: once every requested output is recorded, the next module
that starts (or finishes) raises a private exception that :func:`tapped_forward`'s ``run`` catches.
The recorded outputs keep their autograd graph, so gradients flow back to the input.

Layer outputs come from ``model.tapping(layers)`` (the model adapter's multi-layer capture, which
also reaches functional operations such as a ``torch.relu`` inside a block's ``forward``) when the
model offers it, else from forward hooks on the modules of those names. All hooks are removed on
exit, also when a forward pass raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch

from advlens.errors import ModelError
from advlens.models.adapter import AnalysedModel, find_module, recording


class _Recorded(Exception):
    """Raised inside a forward pass once every requested layer output is recorded."""


def _layer_outputs(stack: ExitStack, model: AnalysedModel, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    tapping = getattr(model, "tapping", None)
    if callable(tapping):
        return stack.enter_context(tapping(list(layers)))
    return stack.enter_context(recording({name: find_module(model.net, name) for name in layers}))


@contextmanager
def tapped_forward(model: AnalysedModel, layers: Sequence[str]
                   ) -> Iterator[Callable[[torch.Tensor], dict[str, torch.Tensor]]]:
    """Context yielding ``run(images) -> {layer: output}``, a forward pass cut after the last of ``layers``.

    ``run`` works with and without gradients (the caller chooses ``torch.no_grad()``); the returned
    dict is a fresh copy per call.

    Shape:
        images: (N, C, H, W) in [0, 1]; each output: (N, K, h, w) for a spatial layer, (N, K) for a vector.
    """
    wanted = tuple(dict.fromkeys(layers))
    with ExitStack() as stack:
        outputs = _layer_outputs(stack, model, wanted)

        def stop_when_recorded(*_args) -> None:
            if all(name in outputs for name in wanted):
                raise _Recorded

        for module in model.net.modules():
            stack.callback(module.register_forward_pre_hook(stop_when_recorded).remove)
            stack.callback(module.register_forward_hook(stop_when_recorded).remove)

        def run(images: torch.Tensor) -> dict[str, torch.Tensor]:
            for name in wanted:
                outputs.pop(name, None)
            try:
                model(images)
            except _Recorded:
                pass
            missing = [name for name in wanted if name not in outputs]
            if missing:
                raise ModelError(f"the forward pass did not produce layer(s) {', '.join(missing)}: "
                                 "the model never runs them")
            return {name: outputs[name] for name in wanted}

        yield run
