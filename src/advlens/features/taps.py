"""Forward passes that record some layers' outputs and stop as soon as all of them are recorded.

Feature visualisation and dataset examples only need the network up to the layers they look at, so
the rest of the forward pass is skipped: once every requested output is recorded, the next module
that starts (or finishes) raises a private exception that :func:`tapped_forward`'s ``run`` catches.
Layer outputs come from ``model.tapping`` (any layer of ``model.graph``, functional operations such
as a ``torch.relu`` inside a block's ``forward`` included) and keep their autograd graph, so
gradients flow back to the input. All hooks are removed on exit, also when a forward pass raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch

from advlens.errors import ModelError
from advlens.models.adapter import AnalysedModel


class _Recorded(Exception):
    """Raised inside a forward pass once every requested layer output is recorded."""


@contextmanager
def tapped_forward(model: AnalysedModel, layers: Sequence[str]
                   ) -> Iterator[Callable[[torch.Tensor], dict[str, torch.Tensor]]]:
    """Context yielding ``run(images) -> {layer: output}``, a forward pass cut after the last of ``layers``.

    ``run`` works with and without gradients (the caller chooses ``torch.no_grad()``); it returns a
    fresh dict per call. Unknown layer names raise ``ModelError`` on entry, before any work.

    Shape:
        images: (N, C, H, W) in [0, 1]; each output: (N, K, h, w) for a spatial layer, (N, D) for a vector.
    """
    wanted = list(dict.fromkeys(layers))
    with ExitStack() as stack:
        outputs = stack.enter_context(model.tapping(wanted))

        def stop_when_recorded(*_args) -> None:
            if all(name in outputs for name in wanted):
                raise _Recorded

        for module in model.net.modules():
            stack.callback(module.register_forward_pre_hook(stop_when_recorded).remove)
            stack.callback(module.register_forward_hook(stop_when_recorded).remove)

        def run(images: torch.Tensor) -> dict[str, torch.Tensor]:
            outputs.clear()
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
