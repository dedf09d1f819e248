"""Cost of the sweep's gradient passes per memory layout and number format, first call of a batch shape apart.

The sweep stage (``advlens.pipeline.sweep``) drives PGD and FGSM with ``gradient_model(model, precision)``: a
copy of the network with batch norms folded, weights in channels-last layout (chosen for the CPU), bfloat16
or float32. Each part of the stage is one batch of ``chunk × strengths`` rows and the last part is smaller,
so a run meets two batch shapes. This script times one input-gradient pass (``advlens.attacks.base.
input_gradient``) for each variant — the stage's channels-last copy and the same copy in the contiguous
(NCHW) layout, in bfloat16 and float32 — separately for the first call at a batch shape (where the GPU
libraries choose or build their kernels) and the mean of the next ``--repeats`` calls, for two batch shapes.

Usage::

    python benchmarks/sweep_gradients.py --model efficientnet-lite0 --dataset photos.npz --rows 126,57 --device cuda
    python benchmarks/sweep_gradients.py --rows 126,36 --device cpu --threads 2        # the demo model
"""

from __future__ import annotations

import argparse
import time

import torch

from advlens.attacks.base import input_gradient
from advlens.data import load_dataset
from advlens.models import load_model
from advlens.pipeline.sweep import gradient_model


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(gradients: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Wall seconds of one input-gradient pass of ``gradients`` over ``images`` (device synchronised)."""
    _synchronize(images.device)
    began = time.perf_counter()
    input_gradient(gradients, images, labels, False)
    _synchronize(images.device)
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fashion-resnet")
    parser.add_argument("--dataset", default="fashion-mnist", help="a dataset name or a .npz of images and labels")
    parser.add_argument("--rows", default="126,57", help="batch shapes (rows), comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, "test")
    model = load_model(args.model, class_names=data.class_names, input_shape=tuple(data.image_shape),
                       device=args.device)
    sizes = [int(part) for part in args.rows.split(",") if part]
    index = torch.arange(max(sizes)) % len(data)
    images, labels = data.images[index].to(model.device), data.labels[index].to(model.device)
    with torch.no_grad():
        model(images[:1])  # the device's libraries start here, outside the timed calls
    device = torch.cuda.get_device_name() if model.device.type == "cuda" else "CPU"
    print(f"{args.model}, {tuple(images.shape[1:])}, device {args.device} ({device}), "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; one input-gradient pass, wall s")
    print(f"{'variant':<31}" + "".join(f"{f'first@{n}':>11}{f'next@{n}':>11}" for n in sizes))
    for precision in ("bfloat16", "float32"):
        for layout in ("channels_last", "contiguous"):
            gradients = gradient_model(model, precision)
            if layout == "contiguous":
                gradients.to(memory_format=torch.contiguous_format)
            row = f"{precision + ' ' + layout + (' (stage)' if layout == 'channels_last' else ''):<31}"
            for n in sizes:
                first = seconds(gradients, images[:n], labels[:n])
                rest = sum(seconds(gradients, images[:n], labels[:n]) for _ in range(args.repeats)) / args.repeats
                row += f"{first:11.3f}{rest:11.4f}"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
