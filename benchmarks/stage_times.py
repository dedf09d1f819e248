"""Wall and CPU time of prepare's stages on any device, per stage and per image the stage works on.

Prepares a scratch store (``--out``, replaced; never a store you keep) stage by stage in this process: model
and data are loaded once, then each stage of ``--stages`` runs as ``prepare(config, out, stages=[stage])``
with the finished ones kept, so each call times exactly one stage (the wall time includes writing its arrays).
Each row gives the stage's wall and CPU seconds (``time.process_time``: every thread of this process), the
number of images it worked on (predict: examined images; attack: true positives; activations: successful
pairs; sweep: sampled images) and the seconds per image, with the 1-minute load average. With
``--device cuda`` the stages run on the GPU (the sweep's PGD gradients in bfloat16 under ``auto``).

``--export FILE.npz`` instead writes the dataset (``--dataset``, ``--augment``) as a ``.npz`` of uint8 images
and labels (with the class names), so that a machine without the dataset or its sources (a GPU machine) can
run the same images (``--dataset FILE.npz``); the largest rounding error of the uint8 copy is printed (the
photos' views are resampled floats: at most half a grey level).

Usage::

    python benchmarks/stage_times.py --dataset photos --augment 32 --export build/gpu-data/photos-aug32.npz
    python benchmarks/stage_times.py --model efficientnet-lite0 --dataset build/gpu-data/photos-aug32.npz \\
        --stages predict,attack,activations,sweep --sweep-eps 1/255,4/255,16/255 --sweep-steps 3 \\
        --batch-size 32 --device cuda --out /tmp/stage-times
    python benchmarks/stage_times.py ... --limit 8 --threads 2 --device cpu     # the CPU side, on few images
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from advlens.data import load_dataset
from advlens.models import load_model
from advlens.pipeline import PrepareConfig, prepare

COUNTS = {"predict": "examined", "attack": "attacked", "activations": "pairs"}
"""The attribute of each stage's group that counts the images it worked on (the sweep: its sample)."""


def _fractions(text: str) -> tuple[float, ...]:
    return tuple(float(Fraction(part)) for part in text.split(",") if part)


def export(name: str, augment: int, seed: int, path: Path) -> None:
    """Write the test split of dataset ``name`` as uint8 images, int64 labels and class names to ``path``."""
    data = load_dataset(name, "test", None, augment=augment, seed=seed)
    images = data.images.numpy()
    quantised = np.rint(images * 255).astype(np.uint8)
    error = float(np.abs(quantised.astype(np.float32) / 255 - images).max()) if images.size else 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=quantised, labels=data.labels.numpy(), class_names=np.array(data.class_names))
    print(f"{path}: {len(images)} images {tuple(images.shape[1:])}, {len(data.class_names)} classes, "
          f"largest uint8 rounding error {error:.5f} ({error * 255:.2f} grey levels), "
          f"{path.stat().st_size / 1e6:.1f} MB")


def worked_on(store, stage: str) -> int:
    """How many images ``stage`` of ``store`` worked on (see :data:`COUNTS`)."""
    attrs = store.group(stage).attrs
    if stage == "sweep":
        return int(sum(attrs["sample_count"]))
    key = COUNTS.get(stage)
    return int(attrs[key]) if key and key in attrs else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--dataset", default="photos", help="a dataset name or a .npz (see --export)")
    parser.add_argument("--augment", type=int, default=0, help="views per photo (photos, imagenet-folder)")
    parser.add_argument("--export", type=Path, help="write the dataset to this .npz and stop")
    parser.add_argument("--stages", default="predict,attack,activations,sweep")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sweep-eps", type=_fractions, help="e.g. 1/255,4/255,16/255 (default: the stage's)")
    parser.add_argument("--sweep-steps", type=int)
    parser.add_argument("--sweep-per-class", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/advlens-stage-times"),
                        help="scratch store folder (replaced)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.export:
        export(args.dataset, args.augment, args.seed, args.export)
        return 0
    settings = {key: value for key, value in dict(sweep_eps=args.sweep_eps, sweep_steps=args.sweep_steps,
                                                   sweep_per_class=args.sweep_per_class).items() if value is not None}
    config = PrepareConfig(model=args.model, dataset=args.dataset, augment=args.augment, limit=args.limit,
                           batch_size=args.batch_size, device=args.device, seed=args.seed, **settings)
    data = load_dataset(args.dataset, "test", None, augment=args.augment, seed=args.seed)
    model = load_model(args.model, class_names=data.class_names, input_shape=tuple(data.image_shape),
                       device=args.device)
    if args.out.exists():
        shutil.rmtree(args.out)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{args.model} on {args.dataset} ({len(data)} images {tuple(data.image_shape)}, limit {args.limit}); "
          f"device {args.device} ({device}), {torch.get_num_threads()} torch threads, batch size {args.batch_size}, "
          f"settings {settings or 'defaults'}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"{'stage':<13}{'wall s':>9}{'CPU s':>9}{'images':>8}{'wall s/img':>12}{'CPU s/img':>11}{'load':>7}")
    try:
        for stage in [name for name in args.stages.split(",") if name]:
            load = os.getloadavg()[0]
            began = np.array([time.perf_counter(), time.process_time()])
            store = prepare(config, args.out, model=model, data=data, stages=[stage])
            wall, cpu = np.array([time.perf_counter(), time.process_time()]) - began
            count = worked_on(store, stage)
            per = (wall / count, cpu / count) if count else (float("nan"),) * 2
            print(f"{stage:<13}{wall:9.2f}{cpu:9.2f}{count:8d}{per[0]:12.4f}{per[1]:11.4f}{load:7.2f}")
    finally:
        shutil.rmtree(args.out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
