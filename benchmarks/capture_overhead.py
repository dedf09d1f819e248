"""Cost of multi-layer capture against a plain forward pass, measured in the same run.

Demo model (``fashion-resnet``, shipped weights) on Fashion-MNIST test images: the plain batched
forward pass is timed at each ``--batch-sizes`` value and the fastest per image is the baseline;
at that batch size, ``model.capture`` of the 9 default activation layers (stem, each block's inner
ReLU, each block output: 992 channels; the inner ReLUs are functional ``torch.relu`` calls, so the
tapped torch.fx copy runs) is timed with ``reduce="none"`` (full maps copied to the CPU) and
``reduce="max"`` (N × C per layer), and the ratio to the baseline is printed. The same is done for
EfficientNet-Lite0 (pretrained, 3×224×224, the 33 activation layers: every call of the reused ReLU6
modules, all module outputs, so forward hooks run) on scikit-learn's two sample photos, tiled to
``--efficientnet-images``. All variants of one model run interleaved ``--repeats`` times; the best
wall time and the best process CPU time of each count, with their ratios to the plain forward (on a
shared machine the CPU time is the steadier figure).

Usage::

    python benchmarks/capture_overhead.py --n-images 512 --batch-sizes 128,256,512 --repeats 7 \
        --efficientnet-images 8 --device cpu
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

import numpy as np
import torch

from advlens.errors import AdvlensError
from advlens.models import load_model
from advlens.models.adapter import AnalysedModel

logger = logging.getLogger("capture_overhead")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=512, help="demo-model images per timed pass")
    parser.add_argument("--batch-sizes", default="128,256,512", help="comma-separated plain-forward batch sizes")
    parser.add_argument("--efficientnet-images", type=int, default=8, help="EfficientNet batch (0: skip)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        parser.error("--batch-sizes takes comma-separated integers, e.g. 64,128,256")
    if min([args.n_images, args.repeats, *args.batch_sizes]) < 1 or args.efficientnet_images < 0:
        parser.error("--n-images, --repeats and the batch sizes must be ≥ 1, --efficientnet-images ≥ 0")
    return args


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_forward(model: AnalysedModel, images: torch.Tensor, batch_size: int) -> None:
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size].to(model.device))


def best_times(variants: dict[str, Callable[[], object]], repeats: int,
               device: str) -> dict[str, tuple[float, float]]:
    """Best wall time and best process CPU time of each variant, the variants interleaved so that
    outside load hits each alike (CPU time is less sensitive to other processes on a shared machine)."""
    for run in variants.values():  # warm-up (builds the fx copy, allocates)
        run()
    best = {name: (float("inf"), float("inf")) for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            synchronize(device)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def report(title: str, times: dict[str, tuple[float, float]], baseline: str, images: int) -> None:
    if title:
        print(title)
    base_wall, base_cpu = times[baseline]
    for name, (wall, cpu) in times.items():
        print(f"   {name:<36} wall {wall:7.3f} s ({1e3 * wall / images:7.3f} ms/image) ×{wall / base_wall:.2f}   "
              f"cpu {cpu:7.3f} s ×{cpu / base_cpu:.2f}")


def bench_demo(args: argparse.Namespace) -> None:
    model = load_model("fashion-resnet", device=args.device)
    try:
        from advlens.data import load_dataset

        images, source = load_dataset("fashion-mnist", "test").images[:args.n_images].clone(), "Fashion-MNIST test"
    except AdvlensError as exc:
        logger.warning("%s — timing random images instead", exc)
        images, source = torch.rand(args.n_images, 1, 28, 28, generator=torch.Generator().manual_seed(0)), "random"
    layers = model.graph.activation_layers()
    channels = sum(model.graph[name].channels for name in layers)
    print(f"== demo model fashion-resnet, {len(images)} {source} images, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"   layers ({len(layers)}, {channels} channels): {', '.join(layers)}")
    plain = best_times({b: (lambda b=b: plain_forward(model, images, b)) for b in args.batch_sizes},
                       args.repeats, args.device)
    for b, (wall, cpu) in plain.items():
        print(f"   plain forward, batch {b:<4}           wall {wall:7.3f} s ({1e3 * wall / len(images):7.3f} ms/image)"
              f"        cpu {cpu:7.3f} s")
    batch = min(plain, key=lambda b: plain[b][0])
    times = best_times({
        f"plain forward (batch {batch})": lambda: plain_forward(model, images, batch),
        "capture 9 layers, reduce=none": lambda: model.capture(images, layers, "none", batch),
        "capture 9 layers, reduce=max": lambda: model.capture(images, layers, "max", batch),
        "capture layer4 only, reduce=max": lambda: model.capture(images, ["layer4"], "max", batch),
    }, args.repeats, args.device)
    report(f"   at the best plain batch size {batch}:", times, f"plain forward (batch {batch})", len(images))


def sample_photos(count: int, size: int = 224) -> tuple[torch.Tensor, str]:
    try:
        from sklearn.datasets import load_sample_images

        photos = np.stack(load_sample_images().images).astype(np.float32) / 255.0  # (2, 427, 640, 3)
        source = "scikit-learn sample photos (china, flower)"
    except ImportError:
        logger.warning("scikit-learn is not installed — timing random images instead")
        photos, source = np.random.default_rng(0).random((2, size, size, 3), dtype=np.float32), "random"
    x = torch.from_numpy(photos).permute(0, 3, 1, 2)
    side = min(x.shape[2:])
    top, left = (x.shape[2] - side) // 2, (x.shape[3] - side) // 2
    x = torch.nn.functional.interpolate(x[:, :, top:top + side, left:left + side], size=(size, size),
                                        mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    return x.repeat((count + len(x) - 1) // len(x), 1, 1, 1)[:count].contiguous(), source


def bench_efficientnet(args: argparse.Namespace) -> None:
    from advlens.models.efficientnet import EFFICIENTNET_INPUT, IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0

    try:
        net = efficientnet_lite0()
    except AdvlensError as exc:
        logger.warning("%s — EfficientNet-Lite0 skipped", exc)
        return
    model = AnalysedModel(net, IMAGENET_MEAN, IMAGENET_STD, EFFICIENTNET_INPUT, [str(c) for c in range(1000)],
                          spec="efficientnet-lite0").to(args.device)
    images, source = sample_photos(args.efficientnet_images)
    layers = model.graph.activation_layers()
    channels = sum(model.graph[name].channels for name in layers)
    batch = len(images)
    print(f"== EfficientNet-Lite0 (pretrained), {batch} images 3×224×224 ({source}), one batch")
    print(f"   layers: {len(layers)} activation layers, {channels} channels (every call of the reused ReLU6)")
    times = best_times({
        "plain forward": lambda: plain_forward(model, images, batch),
        f"capture {len(layers)} layers, reduce=none": lambda: model.capture(images, layers, "none", batch),
        f"capture {len(layers)} layers, reduce=max": lambda: model.capture(images, layers, "max", batch),
        "capture 16 block outputs, reduce=max": lambda: model.capture(images, model.graph.block_outputs(), "max",
                                                                       batch),
    }, args.repeats, args.device)
    report("", times, "plain forward", batch)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    bench_demo(args)
    if args.efficientnet_images:
        bench_efficientnet(args)


if __name__ == "__main__":
    main()
