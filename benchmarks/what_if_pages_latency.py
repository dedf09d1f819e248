"""What-if panel latency on the Datapaths and Profiles pages, demo model: the callbacks (what_if_view.draw) as Dash
calls them, each timing interleaved with a plain forward pass of one image (baseline at the same moment's load).

Usage: python benchmarks/what_if_pages_latency.py STORE (a writable demo-model store: the Datapaths page stores a pair's paths)
"""
import os
import statistics
import sys
import time

import numpy as np
import torch
from advlens.analysis import Session
from advlens.app.datapaths import what_if_view as dp
from advlens.app.profiles import what_if_view as pf

s = Session(sys.argv[1], device="cpu")
pair = 3
print(f"torch threads {torch.get_num_threads()}, load average before {os.getloadavg()}")
t = time.perf_counter(); paths = s.pair_datapaths(pair); print(f"datapaths of pair {pair}: {time.perf_counter() - t:.1f} s")
layers = [g.name for g in s.datapath_layers()]

def timed(f):
    t = time.perf_counter(); f(); return time.perf_counter() - t

def forward(x):
    with torch.no_grad():
        return s.model(x)

x = torch.from_numpy(s.pair_images([pair])[1])
forward(x)
cases = {}
for layer in (layers[2], layers[5], layers[-1]):
    cases[f"datapaths {layer}: first edit (records)"] = ("dp", layer, "restore", "adv", None, True)
    cases[f"datapaths {layer}: adv critical, restore"] = ("dp", layer, "restore", "adv", None, False)
    cases[f"datapaths {layer}: src critical, attack"] = ("dp", layer, "attack", "src", None, False)
for layer in ("layer2", "layer4"):
    cases[f"profiles {layer}: first edit (records)"] = ("pf", layer, "restore", "top", 10, True)
    cases[f"profiles {layer}: top 10, restore"] = ("pf", layer, "restore", "top", 10, False)
    cases[f"profiles {layer}: top 50, zero"] = ("pf", layer, "zero_adversarial", "top", 50, False)
for case, (page, layer, mode, source, k, first) in cases.items():
    times, ratios = [], []
    for _ in range(1 if first else 5):
        base = timed(lambda: forward(x))
        if page == "dp":
            dt = timed(lambda: dp.draw(s, pair, layer, None, mode, source))
        else:
            dt = timed(lambda: pf.draw(s, pair, layer, mode, source, k, None))
        times.append(dt); ratios.append(dt / base)
    print(f"{case:46s} median {1000 * statistics.median(times):7.1f} ms  max {1000 * max(times):7.1f} ms  "
          f"n={len(times)}  median {statistics.median(ratios):5.1f}× a plain forward of one image")
fig, summary = dp.draw(s, pair, layers[-1], None, "restore", "adv")
print("example:", summary)
print(f"load average after {os.getloadavg()}")
