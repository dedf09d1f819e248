"""What-if panel latency on the demo model: the callback (what_if_view.draw) as Dash calls it, per selection, each
timing interleaved with a plain forward pass of one image (the baseline, measured at the same moment's load).

Usage: python benchmarks/what_if_latency.py STORE (a demo-model store)
"""
import os
import statistics
import sys
import time

import torch
from advlens.analysis import Session
from advlens.app.neurons import what_if_view as w

s = Session(sys.argv[1], device="cpu")
pairs = list(range(0, min(s.num_pairs, 40), 4))
print(f"torch threads {torch.get_num_threads()}, load average before {os.getloadavg()}")
for p in pairs:  # warm: the Neuron View computed these rankings when the pair was shown
    s.neuron_ranking(p, "band_gap"); s.neuron_ranking(p, "substitution")

def timed(f):
    t = time.perf_counter(); f(); return time.perf_counter() - t

def forward(x):
    with torch.no_grad():
        return s.model(x)

cases = {"first edit of a pair (records it)": None, "neuron, restore": ("restore", "neuron", 10, 7, "band_gap"),
         "top 10 by band gap, attack": ("attack", "top", 10, 7, "band_gap"),
         "top 256 by substitution, zero": ("zero_adversarial", "top", 256, 7, "substitution")}
times = {c: [] for c in cases}; ratios = {c: [] for c in cases}
forward(torch.from_numpy(s.pair_images([0])[1]))
for p in pairs:
    x = torch.from_numpy(s.pair_images([p])[1])
    for case, args in cases.items():
        for _ in (range(1) if args is None else range(3)):
            base = timed(lambda: forward(x))
            mode, source, k, neuron, measure = args or ("restore", "neuron", 10, 5, "band_gap")
            dt = timed(lambda: w.draw(s, p, mode, source, k, neuron, None, None, measure, 20.0, None))
            times[case].append(dt); ratios[case].append(dt / base)
for case in cases:
    print(f"{case:36s} median {1000 * statistics.median(times[case]):7.1f} ms  max {1000 * max(times[case]):7.1f} ms  "
          f"n={len(times[case]):2d}  median {statistics.median(ratios[case]):4.1f}× a plain forward of one image")
print(f"load average after {os.getloadavg()}")
