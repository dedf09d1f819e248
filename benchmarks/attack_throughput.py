"""Throughput of advlens PGD against its peers: adversarial-robustness-toolbox and torchattacks.

Loads the demo model (``load_model("fashion-resnet")``; a randomly initialised FashionResNet with a
warning if its weights are missing) or another built-in model (``--model efficientnet-lite0``) and the test
images of ``--dataset`` (default Fashion-MNIST; random images with a warning if it is missing; a ``.npz``
path with ``images`` and ``labels`` runs where the dataset is not installed, e.g. a GPU machine), then
times L∞ PGD without random start in each library on the same images with the same ε, α, steps and
batch size (``--no-peers``: advlens alone). Each attack is warmed up on one batch, then all attacks run
``--repeats`` times over all images, interleaved so that load from other processes hits each alike;
each attack's best wall time counts (its process CPU time is shown too). ART's ``generate`` is timed as a user calls it (it converts to
and from NumPy and ends with one extra forward pass to log its success rate).

Usage::

    python benchmarks/attack_throughput.py --batch-size 128 --n-images 512 --steps 7 --eps 8/255 \
        --device cpu --repeats 3
    python benchmarks/attack_throughput.py --model efficientnet-lite0 --dataset photos.npz --n-images 224 \
        --batch-size 32 --device cuda --no-peers      # PGD-7 at 224²; photos.npz from stage_times.py --export
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from advlens.attacks import PGD
from advlens.cli import parse_number as number
from advlens.errors import AdvlensError
from advlens.models.adapter import AnalysedModel

logger = logging.getLogger("attack_throughput")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fashion-resnet", help="built-in model spec (default: the demo model)")
    parser.add_argument("--dataset", default="fashion-mnist",
                        help="dataset name or a .npz with images and labels (test split)")
    parser.add_argument("--no-peers", action="store_true", help="time advlens alone (no ART, no torchattacks)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--n-images", type=int, default=512)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--eps", type=number, default=8 / 255, help="L∞ budget, e.g. 8/255")
    parser.add_argument("--alpha", type=number, default=None, help="step size (default: eps/4, i.e. 2/255)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the fallback model and images")
    args = parser.parse_args(argv)
    if args.alpha is None:
        args.alpha = args.eps / 4
    if min(args.batch_size, args.n_images, args.steps, args.repeats) < 1:
        parser.error("--batch-size, --n-images, --steps and --repeats must be ≥ 1")
    return args


def load_demo_model(device: str, seed: int, spec: str = "fashion-resnet") -> tuple[AnalysedModel, str]:
    from advlens.models import load_model

    if spec != "fashion-resnet":
        return load_model(spec, device=device), spec
    try:
        return load_model("fashion-resnet", device=device), "fashion-resnet (shipped weights)"
    except AdvlensError as exc:
        from advlens.models.fashion_resnet import FASHION_MNIST_MEAN, FASHION_MNIST_STD, FashionResNet

        logger.warning("%s — timing a randomly initialised FashionResNet instead", exc)
        torch.manual_seed(seed)
        model = AnalysedModel(FashionResNet(), FASHION_MNIST_MEAN, FASHION_MNIST_STD, (1, 28, 28),
                              [str(i) for i in range(10)])
        return model.to(device).eval(), "FashionResNet (random init)"


def load_images(n: int, seed: int, name: str = "fashion-mnist", shape: tuple[int, ...] = (1, 28, 28),
                classes: int = 10) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``n`` test images of dataset ``name`` (a name or a ``.npz`` path) and their labels, or seeded
    random images of ``shape`` (logged) when it is missing.

    Shape:
        returns images (n, *shape) float32 in [0, 1] and labels (n,) int64.
    """
    from advlens.data import load_dataset

    try:
        dataset = load_dataset(name, "test")
        return dataset.images[:n].clone(), dataset.labels[:n].clone(), f"{name} test"
    except AdvlensError as exc:
        logger.warning("%s — timing random images instead", exc)
        g = torch.Generator().manual_seed(seed)
        return torch.rand(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g), "random images"


def batched(attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], images: torch.Tensor,
            labels: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device)
        out.append(attack(x, y).detach().cpu())
    return torch.cat(out)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_attacks(runners: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]], images: torch.Tensor,
                 labels: torch.Tensor, batch_size: int, repeats: int,
                 device: str) -> tuple[dict[str, float], dict[str, float], dict[str, torch.Tensor]]:
    """Warm each attack up on one batch, then run all attacks over all images ``repeats`` times, interleaved
    (so that load from other processes hits every library alike). Returns each attack's best wall time, the
    process CPU time of that run, and its last output."""
    for name, run in runners.items():
        logger.info("warming up %s", name)
        run(images[:batch_size], labels[:batch_size])
    wall = {name: float("inf") for name in runners}
    cpu: dict[str, float] = {}
    outputs: dict[str, torch.Tensor] = {}
    for repeat in range(repeats):
        for name, run in runners.items():
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            outputs[name] = run(images, labels)
            synchronize(device)
            elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            logger.info("repeat %d/%d %-12s %.2f s wall, %.2f s CPU", repeat + 1, repeats, name, elapsed,
                        elapsed_cpu)
            if elapsed < wall[name]:
                wall[name], cpu[name] = elapsed, elapsed_cpu
    return wall, cpu, outputs


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("art").setLevel(logging.WARNING)  # ART logs every generate() call at INFO
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, model_name = load_demo_model(args.device, args.seed, args.model)
    images, labels, data_name = load_images(args.n_images, args.seed, args.dataset, model.input_shape,
                                            model.num_classes)
    n = len(images)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"model: {model_name}; data: {data_name}, {n} images {tuple(images.shape[1:])}; device {args.device} "
          f"({device_name}), {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"L∞ PGD: eps={args.eps:.6g} alpha={args.alpha:.6g} steps={args.steps} batch={args.batch_size} "
          f"no random start; best of {args.repeats} after a one-batch warm-up")

    runners: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {}

    advlens_pgd = PGD(model, eps=args.eps, alpha=args.alpha, steps=args.steps, norm="linf")
    runners["advlens"] = lambda x, y: batched(advlens_pgd, x, y, args.batch_size, args.device)

    try:
        if args.no_peers:
            raise ImportError
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        logger.warning("skipping ART (--no-peers, or adversarial-robustness-toolbox is not installed)")
    else:
        classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=model.input_shape,
                                       nb_classes=model.num_classes, clip_values=(0.0, 1.0),
                                       device_type="gpu" if args.device.startswith("cuda") else "cpu")
        art_pgd = ProjectedGradientDescent(classifier, norm=np.inf, eps=args.eps, eps_step=args.alpha,
                                           max_iter=args.steps, targeted=False, num_random_init=0,
                                           batch_size=args.batch_size, verbose=False)
        runners["ART"] = lambda x, y: torch.from_numpy(art_pgd.generate(x.numpy(), y.numpy()))

    try:
        if args.no_peers:
            raise ImportError
        import torchattacks
    except ImportError:
        logger.warning("skipping torchattacks (--no-peers, or not installed: pip install --no-deps torchattacks)")
    else:
        ta_pgd = torchattacks.PGD(model, eps=args.eps, alpha=args.alpha, steps=args.steps, random_start=False)
        runners["torchattacks"] = lambda x, y: batched(ta_pgd, x, y, args.batch_size, args.device)

    seconds, cpu_seconds, outputs = time_attacks(runners, images, labels, args.batch_size, args.repeats, args.device)

    with torch.no_grad():
        fooled = {name: float((batched(lambda x, y: model(x).argmax(1), out, labels, args.batch_size,
                                       args.device) != labels).float().mean()) for name, out in outputs.items()}

    print()
    print(f"{'attack':<14}{'seconds':>10}{'CPU s':>9}{'images/s':>11}{'advlens ÷ it':>14}"
          f"{'max |Δ| vs advlens':>20}{'misclassified':>15}")
    for name in runners:
        rate = n / seconds[name]
        ratio = (n / seconds["advlens"]) / rate
        diff = float((outputs[name] - outputs["advlens"]).abs().max())
        print(f"{name:<14}{seconds[name]:>10.2f}{cpu_seconds[name]:>9.2f}{rate:>11.1f}{ratio:>14.2f}{diff:>20.2e}"
              f"{fooled[name]:>15.1%}")
    print("('advlens ÷ it' > 1 means advlens is faster; 'misclassified' counts all images, not only true positives)")


if __name__ == "__main__":
    main()
