"""Features: what a layer's channels respond to, as pure computations on tensors.

* :func:`feature_visualization`: images that maximise each channel's mean activation.
* :func:`dataset_examples` / :func:`dataset_examples_for_layers`: the top-k images of each channel
  and the receptive-field patch around its peak, from one streaming pass over a dataset.
"""

from advlens.features.examples import DatasetExamples, dataset_examples, dataset_examples_for_layers
from advlens.features.patches import crop_patches, patch_windows
from advlens.features.visualization import feature_visualization

__all__ = ["feature_visualization", "dataset_examples", "dataset_examples_for_layers", "DatasetExamples",
           "crop_patches", "patch_windows"]
