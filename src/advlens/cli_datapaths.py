"""``advlens datapaths STORE --pairs SPEC``: precompute pairs' datapaths (paper 003) into the store.

The app computes a pair's datapaths when a user opens it (≈ 8 s on the demo model); for a large model
(minutes per pair) or a prepared demo, this command computes a selection ahead and keeps each in
``STORE/derived/datapaths`` exactly as the app would (same targets, same settings), so the app reads
them. Resumable: pairs already stored are skipped, and each pair is written when it is done, so after
Ctrl+C the same command goes on where it stopped.

``SPEC``: ``12,40,7`` (pair ids), ``all``, or ``top:N`` — the N pairs of *medium* adversarialness
(the proxy 1 − softmax margin, nearest the median of the store's pairs first), which is what the
example picker suggests: spec-003 §4 says experts pick medium scores.

``--executor ray [--ray-address ADDR]`` computes the pairs as Ray tasks (one pair per task, its images read
from the store when it starts; :mod:`advlens.pipeline.executor`) and writes each result as it arrives: the
same results as the local run, and the same resuming.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from advlens.errors import AdvlensError



def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``datapaths`` command to the ``advlens`` sub-commands."""
    p = commands.add_parser("datapaths", help="precompute pairs' datapaths (paper 003) and keep them in the store, "
                                              "so the Datapaths page opens them at once (resumable)",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("store", help="analysis store folder (with the attack and activations stages)")
    p.add_argument("--pairs", required=True, metavar="SPEC",
                   help="pair ids (12,40,7), 'all', or 'top:N' (the N pairs of medium adversarialness, 1 − softmax "
                        "margin nearest the median, as the page's picker suggests)")
    p.add_argument("--targets", type=int, default=10, help="target images of the adversarial class per pair")
    p.add_argument("--steps", type=int, default=200,
                   help="solver iterations T (the app reads results computed with its default, 200)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where the pairs are computed: this process, or one Ray task per pair (pip install "
                        "'advlens[ray]'); both keep the same results")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="with --executor ray: the cluster (auto, ray://head:10001); default: a local Ray instance")
    p.add_argument("--trust-store-code", action="store_true",
                   help="load a store whose model spec is module.path:factory (runs that code; see serve)")
    return p


def parse_pairs(spec: str, count: int) -> list[int] | int:
    """Pair ids of ``spec`` (checked against ``count`` pairs), or N for ``top:N`` (resolved later).

    Raises AdvlensError naming the problem and the accepted forms.
    """
    text = spec.strip().lower()
    forms = "use pair ids (12,40,7), 'all' or 'top:N'"
    if text == "all":
        return list(range(count))
    if text.startswith("top:"):
        number = text[4:].strip()
        if not number.isdigit() or int(number) < 1:
            raise AdvlensError(f"--pairs {spec!r}: top:N needs a positive whole number N; {forms}")
        return int(number)
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        bad = next(part for part in parts if not part.isdigit())
        raise AdvlensError(f"--pairs {spec!r}: {bad!r} is not a pair id; {forms}")
    pairs = list(dict.fromkeys(int(part) for part in parts))
    outside = [p for p in pairs if p >= count]
    if outside:
        raise AdvlensError(f"--pairs {spec!r}: pair {outside[0]} is not in the store, which has {count} pairs "
                           f"(ids 0 … {count - 1})")
    return pairs


def _check_store(path: str):
    from advlens.store import open_store

    store = open_store(path)
    missing = [stage for stage in ("attack", "activations") if not store.has_stage(stage)]
    if missing:
        raise AdvlensError(f"the store at {path} has no {' or '.join(missing)} stage, so it has no pairs; finish it "
                           f"with `{store.rebuild_command()}`")
    if not os.access(store.root, os.W_OK):
        raise AdvlensError(f"the store at {path} is not writable, so the datapaths could not be kept; copy it "
                           f"(cp -r) to a folder you can write and run the command on the copy")
    return store


def run(args: argparse.Namespace) -> int:
    """Run the command; bad input is reported as one line with exit status 2 before any work."""
    try:
        return _run(args)
    except AdvlensError as exc:
        print(f"advlens datapaths: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from advlens.analysis import Session
    from advlens.pipeline.config import check_device
    from advlens.pipeline.executor import make_executor

    for flag, value in (("--targets", args.targets), ("--steps", args.steps)):
        if value < 1:
            raise AdvlensError(f"{flag} must be at least 1, got {value}")
    executor = make_executor(args.executor, args.ray_address)  # Ray importable, an address only with ray
    store = _check_store(args.store)
    selection = parse_pairs(args.pairs, store.num_pairs)
    session = Session(store, device=check_device(args.device), trust_store_code=args.trust_store_code)
    examples = session.datapath_examples(targets=args.targets, steps=args.steps)
    pairs = examples.medium(selection).tolist() if isinstance(selection, int) else selection
    todo = [p for p in pairs if not examples.stored[p]]
    print(f"datapaths of {len(pairs)} pair(s): {len(pairs) - len(todo)} already stored, {len(todo)} to compute "
          f"(adv + src + {args.targets} targets each, T = {args.steps})")
    seconds = []
    if executor.name == "local":
        with tqdm(todo, desc="datapaths", unit="pair") as bar:
            for pair in bar:
                started = time.perf_counter()
                session.pair_datapaths(pair, targets=args.targets, steps=args.steps)
                seconds.append(time.perf_counter() - started)
                bar.set_postfix(pair=pair, seconds=f"{seconds[-1]:.1f}")
    else:
        seconds = _run_on(executor, session, todo, args.targets, args.steps)
    mean = f", {np.mean(seconds):.1f} s per pair" if seconds else ""
    print(f"datapaths of {len(pairs)} pair(s) kept in {store.root / 'derived' / 'datapaths'} "
          f"({len(seconds)} computed now{mean})")
    return 0


ATTRS = "__attrs__"
"""The entry of a pair task's result that holds the result's JSON attrs (the rest are its arrays)."""


def _pair_task(model, part: slice, job) -> dict[str, np.ndarray]:
    """One pair's datapaths (an executor task): ``job`` (a :class:`advlens.analysis.datapaths.PairDatapathJob`)
    computed with ``model``, as arrays plus the JSON attrs under :data:`ATTRS`."""
    arrays, attrs = job.compute(model).to_arrays()
    return {**arrays, ATTRS: np.array(json.dumps(attrs))}


def _run_on(executor, session, todo: list[int], targets: int, steps: int) -> list[float]:
    """Compute the pairs ``todo`` on ``executor``, each kept in the store as soon as it arrives; the seconds each
    took where it ran."""
    from advlens.analysis.datapaths_pair import PairDatapaths

    jobs = {}

    def job(part: slice):
        jobs[part.start] = session.pair_datapath_job(todo[part.start], targets=targets, steps=steps)
        return jobs[part.start]
    seconds = []
    parts = [slice(i, i + 1) for i in range(len(todo))]
    for part, result in executor.map(_pair_task, session.model, parts, "datapaths", inputs=job):
        attrs = json.loads(str(result.pop(ATTRS)))
        computed = PairDatapaths.from_arrays(result, attrs)
        session.keep_pair_datapaths(jobs.pop(part.start), computed)
        seconds.append(computed.seconds)
    return seconds
