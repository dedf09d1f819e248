"""``fashion-cnn``: the small CNN of paper 002 (§5.2), trained on Fashion-MNIST.

Paper 002 §5.2: "a 4-layer CNN … Each layer has a 3x3 filter, ReLU activation, followed by a
max-pooling layer of stride size 2, effectively halving output dimensions. The number of units at
each layer is 4, 8, 16, and 32. Following the last convolutional layer, a global max-pooling layer
is linked directly to a 10-unit softmax output." It was trained on MNIST with Adam (lr 0.001) for
10 epochs and reached 99% test accuracy.

Choices the paper leaves open (made here):

* convolutions use zero padding 1 ("same"), with biases, so a 3×3 convolution keeps the size;
* the 2× max-pooling rounds up (``ceil_mode=True``): 28 → 14 → 7 → 4 → 2. With Keras' default
  (rounding down, 7 → 3 → 1) the last pooling would drop the last row and column of the last
  conv's maps; rounding up keeps every pixel, so the dense layer's input — the global max pooling
  of ``pool4`` — equals the global max pooling of the last conv's activation ``relu4`` (max-pooling
  twice is one max), and ``relu4`` (32 maps of 4×4) is the analysed layer whose channels are the
  dense layer's inputs, as :class:`~advlens.models.adapter.AnalysedModel` requires;
* the dense layer returns logits (the softmax is applied by the measures).

Trained on Fashion-MNIST by :func:`advlens.training.train_demo.train_demo_model` with
``arch="fashion-cnn"`` (Adam, lr 0.001 one-cycle, 10 epochs, batch 128, seed 0, random horizontal flips): the
shipped weights reach **85.4% test accuracy** on the 10,000 Fashion-MNIST test images (paper 002:
99% on MNIST, an easier dataset; the demo ResNet, with far more parameters, reaches 91.6%).
"""

from __future__ import annotations

import torch
from torch import nn

FASHION_CNN_WIDTHS = (4, 8, 16, 32)
FASHION_CNN_ANALYSED_LAYER = "relu4"


class FashionCNN(nn.Module):
    """Four 3×3 conv → ReLU → 2× max-pool stages (4/8/16/32 filters), global max pooling, linear head.

    Modules are named ``conv1`` … ``conv4``, ``relu1`` … ``relu4``, ``pool1`` … ``pool4``,
    ``global_pool`` and ``fc``.

    Shape:
        input: (N, 1, 28, 28) normalized; relu4: (N, 32, 4, 4); output: logits (N, num_classes).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1,
                 widths: tuple[int, int, int, int] = FASHION_CNN_WIDTHS) -> None:
        super().__init__()
        previous = in_channels
        for index, width in enumerate(widths, start=1):
            self.add_module(f"conv{index}", nn.Conv2d(previous, width, 3, stride=1, padding=1))
            self.add_module(f"relu{index}", nn.ReLU())
            self.add_module(f"pool{index}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
            previous = width
        self.global_pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(previous, num_classes)
        self.depth = len(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(1, self.depth + 1):
            x = getattr(self, f"pool{index}")(getattr(self, f"relu{index}")(getattr(self, f"conv{index}")(x)))
        return self.fc(torch.flatten(self.global_pool(x), 1))
