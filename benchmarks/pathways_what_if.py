"""Latency of the Pathways page's what-if panel callback (issue 13, goal < 0.5 s on the demo model, 2 cores).

Usage: python benchmarks/pathways_what_if.py STORE   (a store of the demo model with the sweep stage, e.g. the 200-image test store)

Prints, with the load average: the callback's time cold (the attacked set and the pinned layers' maps recorded)
and warm (another edit mode; a second pin in an already recorded layer; a pin in a new layer), and the warm edit
alone at the page's image cap (64 images, the biggest set the panel edits) against one plain forward pass of the
same images (the baseline, same run).
"""
import os
import statistics
import sys
import time

import numpy as np
import torch

from advlens.analysis import Session
from advlens.app.pathways import what_if_view
from advlens.faithfulness.multi_layer import edit_layers, record_layers


def timed(fn, repeats=7):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main(store):
    session = Session(store, device="cpu")
    pairs = session.pathway_class_pairs("pgd")
    o, t = int(pairs.original[0]), int(pairs.target[0])
    eps = session.sweep_info().eps
    strength = int(np.argmin(np.abs(eps * 255 - 8))) + 1  # slider index of 8/255
    graph = session.pathway_graph(o, t, "pgd", max_images=what_if_view.PAGE_MAX_IMAGES)
    layer4 = [int(c) for c in graph.node_channel[graph.nodes_of(len(graph.layers) - 1)][:2]]
    layer3 = int(graph.node_channel[graph.nodes_of(len(graph.layers) - 3)][0])
    layer2 = int(graph.node_channel[graph.nodes_of(len(graph.layers) - 5)][0])
    pins = [["layer4", layer4[0]], ["layer3", layer3]]
    pair = f"{o}-{t}"
    print(f"load average {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    start = time.perf_counter()
    _, text = what_if_view.draw(session, pair, "pgd", strength, pins, "restore")
    print(f"cold callback (set + 2 layers recorded + edit): {time.perf_counter() - start:.3f} s — {text[:90]}…")
    for label, args in [("warm, another mode", (pins, "attack")),
                        ("warm, 3 pins, same layers", (pins + [["layer4", layer4[1]]], "restore"))]:
        median, best = timed(lambda: what_if_view.draw(session, pair, "pgd", strength, *args))
        print(f"{label}: median {median:.3f} s, best {best:.3f} s")
    start = time.perf_counter()
    what_if_view.draw(session, pair, "pgd", strength, pins + [["layer2", layer2]], "restore")
    print(f"a pin in a new layer (its maps recorded + edit): {time.perf_counter() - start:.3f} s")
    # the warm edit at the page's cap (64 images), against one plain forward pass of them
    model = session.model
    from advlens.analysis.pathways_what_if import attacked_set
    found = attacked_set(session, o, t, "pgd", float(eps[-1]), 10_000)
    reps = -(-what_if_view.PAGE_MAX_IMAGES // max(len(found.rows), 1))
    benign = found.benign.repeat(reps, 1, 1, 1)[:what_if_view.PAGE_MAX_IMAGES]
    adversarial = found.adversarial.repeat(reps, 1, 1, 1)[:what_if_view.PAGE_MAX_IMAGES]
    channels = {"layer4": layer4, "layer3": [layer3]}
    record = record_layers(model, benign, adversarial, list(channels))
    with torch.no_grad():
        plain, _ = timed(lambda: model(adversarial))
    edit, _ = timed(lambda: edit_layers(model, benign, adversarial, channels, "restore", record=record))
    print(f"{len(benign)} images: warm edit {edit:.3f} s, plain forward {plain:.3f} s (ratio {edit / plain:.2f})")
    # CPU time on one thread (less sensitive to a busy machine than wall time): an upper bound of the quiet wall time
    torch.set_num_threads(1)
    for label, args in [("warm, another mode", (pins, "zero_adversarial")),
                        ("warm, 3 pins, same layers", (pins + [["layer4", layer4[1]]], "attack"))]:
        cpu = []
        for _ in range(7):
            start = time.process_time()
            what_if_view.draw(session, pair, "pgd", strength, *args)
            cpu.append(time.process_time() - start)
        print(f"{label}: CPU time on 1 thread, median {statistics.median(cpu):.3f} s, best {min(cpu):.3f} s")
    cpu = []
    for _ in range(5):
        start = time.process_time()
        edit_layers(model, benign, adversarial, channels, "restore", record=record)
        cpu.append(time.process_time() - start)
    print(f"{len(benign)} images: warm edit, CPU time on 1 thread, median {statistics.median(cpu):.3f} s")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main(sys.argv[1])
