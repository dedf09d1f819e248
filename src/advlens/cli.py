"""The ``advlens`` command line: ``prepare``, ``info``, ``serve``, ``train-demo-model``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from fractions import Fraction
from pathlib import Path

from advlens.errors import AdvlensError

logger = logging.getLogger("advlens")


def parse_number(text: str) -> float:
    """Parse ``0.03``, ``8/255`` and the like."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError) as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _add_prepare(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("prepare", help="attack a dataset and write an analysis store",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="fashion-resnet",
                   help="fashion-resnet, cifar-resnet18 or module.path:factory")
    p.add_argument("--weights", help="weights file (.safetensors or a torch state dict)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling of a torch checkpoint (only for files you trust)")
    p.add_argument("--layer", dest="analysed_layer", help="analysed layer (dotted name); default: last conv stage")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, cifar10, folder, npz or FILE.npz")
    p.add_argument("--split", default="test", help="train or test")
    p.add_argument("--data-dir", help="folder of the dataset files (for npz: the file)")
    p.add_argument("--limit", type=int, help="examine only the first N images")
    p.add_argument("--out", required=True, help="store folder to write")
    p.add_argument("--attack", choices=("pgd", "fgsm", "file"), default="pgd")
    p.add_argument("--adversarial", dest="adversarial_file",
                   help="with --attack file: .npz with 'adversarial' aligned to dataset indices")
    p.add_argument("--eps", type=parse_number, default=8 / 255, help="perturbation budget ε (e.g. 8/255)")
    p.add_argument("--alpha", type=parse_number, default=2 / 255, help="PGD step size α")
    p.add_argument("--steps", type=int, default=7, help="PGD iterations κ")
    p.add_argument("--norm", choices=("linf", "l2"), default="linf")
    p.add_argument("--targeted", action="store_true", help="targeted attack (target: --target-class or next class)")
    p.add_argument("--target-class", type=int)
    p.add_argument("--random-start", action="store_true")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--overwrite", action="store_true", help="replace a store of another configuration")


def _prepare(args: argparse.Namespace) -> int:
    from advlens.models import load_model
    from advlens.data import load_dataset
    from advlens.pipeline import PrepareConfig, prepare

    config = PrepareConfig(
        model=args.model, weights=args.weights, analysed_layer=args.analysed_layer, dataset=args.dataset,
        split=args.split, data_dir=args.data_dir, limit=args.limit, attack=args.attack, eps=args.eps,
        alpha=args.alpha, steps=args.steps, norm=args.norm, targeted=args.targeted,
        target_class=args.target_class, random_start=args.random_start, adversarial_file=args.adversarial_file,
        seed=args.seed, batch_size=args.batch_size, device=args.device or _default_device(),
    )
    if config.batch_size < 1 or (config.limit is not None and config.limit < 1):
        raise AdvlensError("--batch-size and --limit must be positive")
    data = load_dataset(config.dataset, config.split, config.data_dir)
    model = load_model(config.model, config.weights, class_names=data.class_names,
                       input_shape=tuple(data.image_shape), analysed_layer=config.analysed_layer,
                       trust_pickle=args.trust_pickle, device=config.device)
    store = prepare(config, args.out, overwrite=args.overwrite, model=model, data=data)
    _print_summary(store)
    print(f"analysis store ready: {Path(args.out).resolve()}")
    return 0


def _print_summary(store) -> None:
    for stage in store.finished_stages:
        info = store.manifest["stages"][stage]
        attrs = {k: v for k, v in info.get("attrs", {}).items() if not isinstance(v, (list, dict))}
        print(f"  {stage:<12} {info['seconds']:>8.1f} s  {json.dumps(attrs)}")


def _info(args: argparse.Namespace) -> int:
    from advlens.store import open_store

    store = open_store(args.store)
    config = store.config
    print(f"store {store.root.resolve()} (schema {store.manifest['schema_version']}, "
          f"advlens {store.manifest['advlens_version']})")
    print(f"  model {config['model']['spec']}, layer {config['model']['analysed_layer']}; "
          f"dataset {config['dataset']['name']}/{config['dataset']['split']}; attack {json.dumps(config['attack'])}")
    _print_summary(store)
    missing = [s for s in ("predict", "attack", "activations", "statistics", "projections")
               if s not in store.finished_stages]
    if missing:
        print(f"  unfinished stages: {', '.join(missing)} (run the same `advlens prepare` again to resume)")
    return 0


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _add_serve(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("serve", help="open the web app on an analysis store",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("store", help="analysis store folder (written by `advlens prepare`)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind; anything but 127.0.0.1 exposes the app to the network")
    p.add_argument("--port", type=int, default=8050, help="port to listen on")
    p.add_argument("--device", help="cpu or cuda for on-demand computations (default: cuda when available)")
    p.add_argument("--debug", action="store_true", help="Dash debug mode (reloader off; for development)")


def _check_port(host: str, port: int) -> None:
    """Fail early, with exit code 2, when the address cannot be bound (Werkzeug would exit with 1)."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise AdvlensError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; pick another --port "
                           "(or --host)") from exc


def _serve(args: argparse.Namespace) -> int:
    try:
        from advlens.app import create_app
    except ImportError as exc:
        raise AdvlensError(f"the web app needs Dash and Plotly ({exc}); install them with "
                           "`pip install 'advlens[app]'`") from exc
    from advlens.analysis import Session

    if not 0 < args.port < 65536:
        raise AdvlensError(f"--port must be in 1..65535, got {args.port}")
    session = Session(args.store, device=args.device)
    _check_port(args.host, args.port)
    try:  # load the model now: a mismatch is reported at start, not at the first vulnerability map
        session.model
    except AdvlensError as exc:
        logger.warning("vulnerability maps and the substitution measure are unavailable: %s", exc)
    app = create_app(session)
    logging.getLogger("werkzeug").setLevel(logging.DEBUG if args.verbose else logging.WARNING)  # no line per request
    if args.host not in LOOPBACK:
        logger.warning("serving on %s: anyone who can reach this machine can use the app and see the store",
                       args.host)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"advlens: serving {Path(args.store).resolve()} on http://{host}:{args.port}/ (Ctrl+C to stop)")
    try:
        app.run(host=args.host, port=args.port, debug=args.debug, use_reloader=False)
    except OSError as exc:  # e.g. the port is taken
        raise AdvlensError(f"cannot serve on {args.host}:{args.port}: {exc}; pick another --port") from exc
    return 0


def _train(args: argparse.Namespace) -> int:
    from advlens.training.train_demo import train_demo_model

    accuracy = train_demo_model(args.out, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                data_dir=args.data_dir, device=args.device or _default_device())
    print(f"test accuracy {accuracy:.4f}; weights written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advlens", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_prepare(commands)
    info = commands.add_parser("info", help="summarize an analysis store")
    info.add_argument("store")
    _add_serve(commands)
    from advlens.models.registry import demo_weights_path

    train = commands.add_parser("train-demo-model", help="train the fashion-resnet demo model",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--out", default=str(demo_weights_path()))
    train.add_argument("--epochs", type=int, default=2)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data-dir")
    train.add_argument("--device")
    return parser


COMMANDS = {"prepare": _prepare, "info": _info, "serve": _serve, "train-demo-model": _train}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except AdvlensError as exc:
        print(f"advlens {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"advlens {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
