"""The ``advlens`` command line: ``prepare``, ``info``, ``serve``, ``pathways``, ``train-demo-model``."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from advlens import cli_datapaths
from advlens.errors import AdvlensError
from advlens.store.manifest import CORE_STAGES, STAGES

logger = logging.getLogger("advlens")


def parse_number(text: str) -> float:
    """Parse ``0.03``, ``8/255`` and the like."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError) as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc


def parse_numbers(text: str) -> tuple[float, ...]:
    """Parse ``1/255,2/255,0.1``: comma-separated numbers (their range is checked with the other options)."""
    return tuple(parse_number(part.strip()) for part in text.split(",") if part.strip())


def parse_names(text: str) -> tuple[str, ...]:
    """Parse ``pgd,fgsm``: comma-separated names (checked with the other options)."""
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def parse_stages(text: str) -> list[str]:
    """Parse ``a,b``: stage names, each one the store knows."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STAGES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown stage(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                                         f"choose from {', '.join(STAGES)}")
    return names


def _add_prepare(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("prepare", help="attack a dataset and write an analysis store",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="fashion-resnet",
                   help="fashion-resnet, fashion-cnn, efficientnet-lite0 (pretrained ImageNet), cifar-resnet18 or "
                        "module.path:factory")
    p.add_argument("--weights", help="weights file (.safetensors or a torch state dict)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling of a torch checkpoint (only for files you trust); the store keeps "
                        "a safetensors copy of the weights, so opening the store later needs no unpickling")
    p.add_argument("--layer", dest="analysed_layer", help="analysed layer (dotted name); default: last conv stage")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist, cifar10, folder, npz, FILE.npz, photos (the real photos scikit-image and "
                        "scikit-learn ship, ImageNet-labelled) or imagenet-folder (--data-dir with one folder per "
                        "ImageNet class, named by WordNet id or class name)")
    p.add_argument("--augment", type=int, default=0, metavar="N",
                   help="photos / imagenet-folder: N views of each photo (the centre crop and N-1 seeded random "
                        "crops, flips and colour jitter) to form class sets")
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
    p.add_argument("--overwrite", action="store_true",
                   help="replace a store of another configuration, or one whose manifest is damaged (only what "
                        "advlens wrote is removed; a folder that is not an advlens store is refused)")
    p.add_argument("--stages", type=parse_stages, metavar="A,B",
                   help=f"stages to prepare, comma-separated, plus the stages they need (default: all: "
                        f"{', '.join(STAGES)}); finished stages are kept, so this adds a stage to an existing store")
    p.add_argument("--redo", choices=STAGES, metavar="STAGE",
                   help=f"compute STAGE and the finished stages that depend on it again, e.g. after "
                        f"`advlens info --verify` found it damaged ({', '.join(STAGES)})")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where the attack, activations and sweep batches run: this process, or tasks on Ray "
                        "(pip install 'advlens[ray]'); both write the same store")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="with --executor ray: the cluster (auto, ray://head:10001); default: a local Ray instance")
    p.add_argument("--feature-steps", type=int, metavar="N",
                   help="feature-visualisation steps of the features stage (default: the benchmarked 32; recorded "
                        "in the stage, not part of the store's identity: --redo features recomputes with new ones)")
    sweep = p.add_argument_group("sweep stage (pathways; recorded in the stage: --redo sweep recomputes with new "
                                 "settings)")
    sweep.add_argument("--sweep-eps", type=parse_numbers, default=argparse.SUPPRESS, metavar="E1,E2,...",
                       help="L∞ strengths ε of the sweep (default: 1/255,2/255,4/255,8/255,16/255,32/255)")
    sweep.add_argument("--sweep-attacks", type=parse_names, default=argparse.SUPPRESS, metavar="A,B", help="pgd and/or fgsm (default: pgd,fgsm)")
    sweep.add_argument("--sweep-per-class", type=int, default=argparse.SUPPRESS, metavar="N",
                       help="attack at most N benign true positives of each class, a seeded sample (default: 300)")
    sweep.add_argument("--sweep-steps", type=int, default=argparse.SUPPRESS, metavar="K", help="PGD iterations of the sweep (default: 7; α = ε/4)")
    sweep.add_argument("--sweep-precision", choices=("auto", "bfloat16", "float32"), default=argparse.SUPPRESS,
                       help="number format of PGD's gradient passes: auto (bfloat16 where the hardware has it "
                            "natively: 1.8x less CPU, 99%% of predictions as float32's), bfloat16 or float32 "
                            "(default: auto; the final forward is always float32)")
    profiles = p.add_argument_group("profiles stage (activation profiles; recorded in the stage: --redo profiles "
                                    "recomputes with new settings)")
    profiles.add_argument("--profiles-background", type=int, default=argparse.SUPPRESS, metavar="N",
                          help="background images of the aligned fit, a seeded sample of the examined images "
                               "(default: 2000, or all when fewer; below 1000 profiles may not be representative)")
    profiles.add_argument("--profiles-layers", default=argparse.SUPPRESS,
                          metavar="A,B,...", help="the profile axes, layers in execution order each feeding the "
                                                  "next (default: the block outputs + logits)")


def _prepare(args: argparse.Namespace) -> int:
    from advlens.pipeline import PrepareConfig, prepare
    from advlens.pipeline.config import DEFAULT_FEATURE_STEPS

    config = PrepareConfig(
        model=args.model, weights=args.weights, analysed_layer=args.analysed_layer, dataset=args.dataset,
        split=args.split, data_dir=args.data_dir, limit=args.limit, augment=args.augment, executor=args.executor,
        ray_address=args.ray_address, attack=args.attack, eps=args.eps,
        alpha=args.alpha, steps=args.steps, norm=args.norm, targeted=args.targeted,
        target_class=args.target_class, random_start=args.random_start, adversarial_file=args.adversarial_file,
        seed=args.seed, batch_size=args.batch_size, device=args.device, trust_pickle=args.trust_pickle,
        feature_steps=DEFAULT_FEATURE_STEPS if args.feature_steps is None else args.feature_steps,
        **{name: value for name in ("sweep_eps", "sweep_attacks", "sweep_per_class", "sweep_steps", "sweep_precision",
                                    "profiles_background", "profiles_layers")
           if (value := getattr(args, name, None)) is not None},
    )
    store = prepare(config, args.out, overwrite=args.overwrite, redo=args.redo,
                    stages=args.stages)  # checks everything first
    _print_summary(store)
    print(f"analysis store ready: {Path(args.out).resolve()}")
    return 0


def _print_summary(store) -> None:
    """One line per stage: its time and its scalar attrs, or that it is missing."""
    for stage in STAGES:
        info = store.manifest["stages"].get(stage)
        if info is None:
            print(f"  {stage:<12} {'-':>8}    not prepared{'' if stage in CORE_STAGES else ' (optional)'}")
            continue
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
    weights = store.manifest.get("weights")
    if weights:
        print(f"  weights {weights['file']} (copied from {weights['source']})")
    _print_summary(store)
    core = [s for s in store.missing_stages if s in CORE_STAGES]
    optional = [s for s in store.missing_stages if s not in CORE_STAGES]
    if core:
        print(f"  unfinished stages: {', '.join(core)} (run the same `advlens prepare` again to resume)")
    if optional:
        print(f"  optional stages not prepared: {', '.join(optional)}; add them with:")
        print(f"    {store.add_stages_command(*optional)}")
    if not args.verify:
        return 0
    results = store.verify()
    damaged = {name: problem for name, problem in results.items() if problem}
    for name, problem in damaged.items():
        print(f"  DAMAGED {name}: {problem}")
    if not damaged:
        print(f"  verified: all {len(results)} arrays and files match the digests recorded when they were written")
        return 0
    stages = sorted({name.split("/")[0] for name in damaged if "/" in name}, key=STAGES.index)
    print(f"advlens info: {len(damaged)} of {len(results)} arrays and files are damaged; rebuild with:",
          file=sys.stderr)
    for stage in _redo_roots(stages):  # redoing a stage recomputes the stages that depend on it too
        print(f"  {store.rebuild_command(stage)}", file=sys.stderr)
    if not stages:  # only the weights
        print(f"  {store.rebuild_command()}", file=sys.stderr)
    return 1


def _redo_roots(stages: list[str]) -> list[str]:
    """The damaged stages that no other damaged stage's redo covers (a redo also redoes its dependents)."""
    from advlens.pipeline.stages import dependents

    covered = {d for stage in stages for d in dependents(stage)}
    return [stage for stage in stages if stage not in covered]


def _is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _add_serve(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("serve", help="open the web app on an analysis store",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("store", help="analysis store folder (written by `advlens prepare`)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind; anything but 127.0.0.1 exposes the app to the network")
    p.add_argument("--port", type=int, default=8050, help="port to listen on")
    p.add_argument("--device", help="cpu or cuda for on-demand computations (default: cuda when available)")
    p.add_argument("--trust-store-code", action="store_true",
                   help="open a store whose model spec is module.path:factory. Loading that model imports the "
                        "module and runs the factory, i.e. runs Python code named by the store: pass this only "
                        "for stores you prepared yourself or otherwise trust. Built-in models need no flag")
    p.add_argument("--debug", action="store_true",
                   help="Dash debug mode (reloader off; for development). It exposes Werkzeug's interactive "
                        "debugger, which runs any Python code sent to it, so it is refused unless --host is a "
                        "loopback address")


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
    from advlens.models.registry import BUILTINS
    from advlens.pipeline.config import check_device
    from advlens.store import open_store

    if not 0 < args.port < 65536:
        raise AdvlensError(f"--port must be in 1..65535, got {args.port}")
    if args.debug and not _is_loopback(args.host):
        raise AdvlensError(f"--debug exposes Werkzeug's debugger, which runs any code sent to it: it is refused "
                           f"on --host {args.host}; use it with --host 127.0.0.1 only")
    device = check_device(args.device)
    spec = open_store(args.store).config["model"]["spec"]
    if spec not in BUILTINS and not args.trust_store_code:
        raise AdvlensError(
            f"the store at {args.store} was prepared with the model spec {spec!r}: opening it imports the module "
            f"{spec.partition(':')[0]!r} and runs its factory, i.e. runs Python code the store names. Pass "
            "--trust-store-code if you prepared this store yourself or otherwise trust that code"
        )
    session = Session(args.store, device=device, trust_store_code=args.trust_store_code)
    _check_port(args.host, args.port)
    try:  # load the model now: a mismatch is reported at start, not at the first vulnerability map
        session.model
    except AdvlensError as exc:
        logger.warning("vulnerability maps and the substitution measure are unavailable: %s", exc)
    app = create_app(session)
    logging.getLogger("werkzeug").setLevel(logging.DEBUG if args.verbose else logging.WARNING)  # no line per request
    if not _is_loopback(args.host):
        logger.warning("serving on %s: anyone who can reach this machine can use the app and see the store",
                       args.host)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"advlens: serving {Path(args.store).resolve()} on http://{host}:{args.port}/ (Ctrl+C to stop)")
    try:
        app.run(host=args.host, port=args.port, debug=args.debug, use_reloader=False)
    except OSError as exc:  # e.g. the port is taken
        raise AdvlensError(f"cannot serve on {args.host}:{args.port}: {exc}; pick another --port") from exc
    return 0


def _add_pathways(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("pathways", help="a class pair's activation pathways (its pathway graph, and with "
                                             "--targeted first its targeted sweep), computed once and kept in the "
                                             "store",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("store", help="analysis store folder with the sweep stage")
    p.add_argument("--original", required=True, metavar="C", help="the original class: an id or a class name")
    p.add_argument("--target", required=True, metavar="C", help="the target class: an id or a class name")
    p.add_argument("--targeted", action="store_true",
                   help="Bluff's setting: attack the sweep's sampled images of the original class toward the target "
                        "(targeted PGD and FGSM at the sweep's strengths), keep it in the store, and build the "
                        "graph from it (default: from the store's untargeted sweep)")
    p.add_argument("--attack", default="pgd", help="the sweep's attack whose pathways the graph shows (pgd or fgsm)")
    p.add_argument("--max-images", type=int, default=200, help="images per set the edge influences are medians over")
    p.add_argument("--recompute", action="store_true", help="compute the targeted sweep again even if it is stored")
    p.add_argument("--batch-size", type=int, default=128, help="rows (images × strengths) per forward pass")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--trust-store-code", action="store_true",
                   help="load a store whose model spec is module.path:factory (runs that code; see serve)")


def parse_class(value: str, names: list[str], what: str) -> int:
    """A class given as an id or a name (case-insensitive), or AdvlensError naming the valid classes."""
    text = value.strip()
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return int(text)
    lowered = [name.lower() for name in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    valid = ", ".join(f"{i} {name!r}" for i, name in enumerate(names))
    raise AdvlensError(f"{what} {value!r} is not a class of the store; the classes are {valid}")


def _pathways(args: argparse.Namespace) -> int:
    from advlens.analysis import Session
    from advlens.pipeline.config import check_device
    from advlens.pipeline.stages_pathways import targeted_sweep
    from advlens.store import open_store

    store = open_store(args.store)
    names = store.class_names
    original = parse_class(args.original, names, "--original")
    target = parse_class(args.target, names, "--target")
    if original == target:
        raise AdvlensError(f"--original and --target are both class {original} {names[original]!r}; a pathway "
                           "needs two different classes")
    for flag, value in (("--batch-size", args.batch_size), ("--max-images", args.max_images)):
        if value < 1:
            raise AdvlensError(f"{flag} must be at least 1, got {value}")
    if not store.has_stage("sweep"):
        raise AdvlensError(f"the store at {args.store} has no sweep stage; add it with "
                           f"`{store.add_stages_command('sweep')}`")
    attacks = store.group("sweep").attrs["attacks"]
    if args.attack not in attacks:
        raise AdvlensError(f"--attack {args.attack!r} is not in the store's sweep; use one of {', '.join(attacks)}")
    session = Session(store, device=check_device(args.device), trust_store_code=args.trust_store_code)
    pair = f"{original} {names[original]!r} → {target} {names[target]!r}"
    if args.targeted:
        strengths = len(store.group("sweep").attrs["eps"])
        result, computed = targeted_sweep(store, session.model, original, target,
                                          chunk=max(1, args.batch_size // strengths), recompute=args.recompute)
        attrs = result.attrs
        print(f"targeted sweep {pair}: {attrs['images']} images, {'computed now' if computed else 'read from the store'}")
        for attack, rates in attrs["target_rate"].items():
            cells = ", ".join(f"{eps * 255:g}/255: {rate:.0%}" for eps, rate in zip(attrs["eps"], rates))
            print(f"  {attack}: predicted as the target at ε {cells}")
    graph = session.pathway_graph(original, target, attack=args.attack, max_images=args.max_images,
                                  targeted=args.targeted)
    groups = np.bincount(graph.node_group, minlength=len(graph.group_names))
    print(f"pathway graph {pair} ({args.attack}, {'targeted' if args.targeted else 'untargeted'} sweep): "
          f"{graph.num_nodes} neurons in {len(graph.layers)} layers ("
          + ", ".join(f"{name} {count}" for name, count in zip(graph.group_names, groups) if count)
          + f"), {graph.num_edges} edges; kept in {store.root / 'derived'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from advlens.models.registry import demo_weights_path
    from advlens.pipeline.config import check_device
    from advlens.training.train_demo import train_demo_model

    device = check_device(args.device)
    out = args.out or str(demo_weights_path(args.arch))
    accuracy = train_demo_model(out, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                data_dir=args.data_dir, device=device, arch=args.arch)
    print(f"test accuracy {accuracy:.4f}; weights written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advlens", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_prepare(commands)
    info = commands.add_parser("info", help="summarize an analysis store (and verify it)")
    info.add_argument("store")
    info.add_argument("--verify", action="store_true",
                      help="read every array and the weights and compare them with the digests recorded when they "
                           "were written; exit status 1 and the damaged arrays when any differ")
    _add_serve(commands)
    _add_pathways(commands)
    cli_datapaths.add_parser(commands)

    train = commands.add_parser("train-demo-model", help="train a built-in Fashion-MNIST model",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--arch", choices=("fashion-resnet", "fashion-cnn"), default="fashion-resnet",
                       help="fashion-resnet (the demo model) or fashion-cnn (paper 002's small CNN)")
    train.add_argument("--out", default=None, help="default: the shipped weights of --arch")
    train.add_argument("--epochs", type=int, default=None, help="default: the recipe's (2 fashion-resnet, 10 fashion-cnn)")
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data-dir")
    train.add_argument("--device")
    return parser


COMMANDS = {"prepare": _prepare, "info": _info, "serve": _serve, "pathways": _pathways,
            "datapaths": cli_datapaths.run, "train-demo-model": _train}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except AdvlensError as exc:
        print(f"advlens {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a folder that is not writable, ...: one line, not a traceback
        logger.debug("file operation failed", exc_info=True)
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"advlens {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"advlens {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
