"""Wall and CPU time of every stage of the photos store on EfficientNet-Lite0 (issue 12, items 3 and 6).

Prepares ``advlens prepare --model efficientnet-lite0 --dataset photos --augment N`` stage by stage in
this process (model and data loaded once, each stage run by ``prepare(..., stages=[stage])`` with the
finished ones kept, so each call runs exactly one stage) and prints one row per stage: wall seconds,
CPU seconds (``time.process_time``: every thread of this process), their ratio, and the 1-minute load
average before and after. On a machine shared with other processes the wall time is the noisy figure;
CPU seconds are steadier (run with ``OMP_WAIT_POLICY=PASSIVE`` so waiting OpenMP threads do not spin and
count CPU time; the policy in effect is printed).

The sweep is the expensive stage (PGD at 224², E·(κ−1)+1 gradient passes per image): ``--sweep-eps``
and ``--sweep-steps`` keep it affordable on a laptop-class CPU. The ``features`` stage visualises every
channel of every activation layer at the input size (EfficientNet-Lite0: 33 layers, 19,200 channels);
``--skip features`` leaves it out and ``--features-probe C`` instead times the visualisation of the
first C channels of one layer, to extrapolate.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/photos_store.py --out /tmp/photos-store \\
        --augment 32 --sweep-eps 1/255,4/255,16/255 --sweep-steps 3 --skip features --features-probe 32
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from fractions import Fraction
from pathlib import Path

import torch

from advlens.data import load_dataset
from advlens.models import load_model
from advlens.pipeline import PrepareConfig, prepare
from advlens.pipeline import stages as stage_registry

MODEL = "efficientnet-lite0"


def _fractions(text: str) -> tuple[float, ...]:
    return tuple(float(Fraction(part)) for part in text.split(",") if part)


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _row(name: str, started: tuple[float, float], load_before: float, note: str = "") -> tuple:
    wall, cpu = (now - then for now, then in zip(_clock(), started))
    return name, wall, cpu, load_before, os.getloadavg()[0], note


def _print_table(rows: list[tuple]) -> None:
    print(f"\n{'stage':<14}{'wall s':>9}{'CPU s':>9}{'CPU/wall':>9}{'load before':>13}{'load after':>12}  note")
    for name, wall, cpu, before, after, note in rows:
        print(f"{name:<14}{wall:9.1f}{cpu:9.1f}{cpu / max(wall, 1e-9):9.2f}{before:13.2f}{after:12.2f}  {note}")
    stages = [r for r in rows if not r[0].startswith("(load") and not r[0].startswith("(features")]
    total_wall = sum(r[1] for r in stages)
    total_cpu = sum(r[2] for r in stages if r[2] == r[2])
    print(f"{'total':<14}{total_wall:9.1f}{total_cpu:9.1f}  (stages; CPU of the stages measured in this run)")


def _finished_seconds(out: Path, stage: str) -> float | None:
    """The recorded wall seconds of ``stage`` when the store at ``out`` already holds it, else None."""
    manifest = out / "manifest.json"
    if not manifest.exists():
        return None
    record = json.loads(manifest.read_text()).get("stages", {}).get(stage)
    return None if record is None else float(record.get("seconds", float("nan")))


def _features_probe(model, channels: int, steps: int) -> tuple:
    """Time the visualisation of ``channels`` channels of the deepest feature layer at the input size."""
    from advlens.features import feature_visualization
    from advlens.pipeline.stages_features import feature_layers

    layers = feature_layers(model)
    layer = layers[-1]
    total = sum(model.graph[name].channels for name in layers)
    load, started = os.getloadavg()[0], _clock()
    feature_visualization(model, layer, list(range(channels)), steps=steps, seed=0, lr=0.1)
    row = _row("(features probe)", started, load)
    per_channel = row[2] / channels
    note = (f"{channels} ch of {layer}, {steps} steps: {per_channel:.2f} CPU s/ch -> all {total} ch of "
            f"{len(layers)} layers ≈ {per_channel * total / 3600:.1f} CPU h; their float16 images "
            f"≈ {total * 3 * 224 * 224 * 2 / 2**30:.1f} GiB")
    return (*row[:5], note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="store folder (replaced if it exists); keep it under /tmp")
    parser.add_argument("--augment", type=int, default=32)
    parser.add_argument("--sweep-eps", type=_fractions, default=None, help="e.g. 1/255,4/255,16/255")
    parser.add_argument("--sweep-steps", type=int, default=None)
    parser.add_argument("--sweep-per-class", type=int, default=None)
    parser.add_argument("--profiles-background", type=int, default=None)
    parser.add_argument("--feature-steps", type=int, default=None)
    parser.add_argument("--skip", default="", help="stages to leave out, comma-separated (e.g. features)")
    parser.add_argument("--features-probe", type=int, default=0, metavar="C",
                        help="time the visualisation of C channels (0: no probe)")
    parser.add_argument("--keep", action="store_true", help="resume into an existing --out instead of replacing it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    settings = {key: value for key, value in dict(
        sweep_eps=args.sweep_eps, sweep_steps=args.sweep_steps, sweep_per_class=args.sweep_per_class,
        profiles_background=args.profiles_background, feature_steps=args.feature_steps).items() if value is not None}
    config = PrepareConfig(model=MODEL, dataset="photos", augment=args.augment, device="cpu", **settings)
    out = Path(args.out)
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    skip = {name for name in args.skip.split(",") if name}
    stages = [name for name in stage_registry.plan(None) if name not in skip]
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, settings {settings or 'defaults'}")

    rows = []
    load, started = os.getloadavg()[0], _clock()
    data = load_dataset("photos", "test", None, augment=args.augment, seed=config.seed)
    model = load_model(MODEL, class_names=data.class_names, input_shape=tuple(data.image_shape))
    rows.append(_row("(load)", started, load, f"{len(data.images)} images, model + data"))
    for name in stages:
        earlier = _finished_seconds(out, name)
        if earlier is not None:  # kept from an earlier run (--keep): its wall time from the manifest
            rows.append((f"({name})", earlier, float("nan"), float("nan"), float("nan"),
                         "finished by an earlier run: wall s from the manifest, CPU not measured"))
            continue
        load, started = os.getloadavg()[0], _clock()
        prepare(config, out, model=model, data=data, stages=[name])
        rows.append(_row(name, started, load))
    if args.features_probe:
        rows.append(_features_probe(model, args.features_probe, config.feature_steps))
    _print_table(rows)
    print(f"\nstore: {out} (stages: {', '.join(stages)}); skipped: {', '.join(sorted(skip)) or 'none'}")


if __name__ == "__main__":
    main()
