"""The ``vitcls`` command: ``variants``, ``extract``, ``evaluate``, ``cache``, ``run`` (the
notebook matrix).

User errors (a wrong name, a missing folder or checkpoint, a model family that cannot do what
is asked, a folder that cannot be written or has no room) print one line and exit with status
2, checked before any weights load; an interrupted command (Ctrl-C, or SIGTERM to ``vitcls
run``) exits with 130 and resumes when the same command is run again.
"""
from __future__ import annotations

import argparse
import re
import signal
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from ..base.errors import VitclsError


DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def batch_size_arg(text: str):
    """argparse type: a positive integer, or "auto" (the largest batch that fits the GPU)."""
    return "auto" if text == "auto" else positive_int(text)


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def device_name(text: str) -> str:
    """argparse type: auto, cpu, mps, cuda or cuda:N, checked before torch is imported."""
    if not DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda, "
                                         "cuda:N or mps")
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _check_out(out: str) -> None:
    """:func:`vitcls_utils.stores.format.check_out_folder`'s check, without importing torch."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise VitclsError(f"--out {out} is a file; it must be a folder (the root of the "
                          "extraction stores), existing or not")


def _table(rows: List[List[str]], header: List[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]

    def line(cells: List[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def cmd_variants(args: argparse.Namespace) -> int:
    from ..model.registry import list_variants

    rows = [[v.key, v.label, v.timm_name, str(v.num_classes) if v.has_head else "no head",
             str(v.n_tokens), v.pooling,
             v.dataset, v.weights, v.preprocess.describe()]
            for v in list_variants(include_random=not args.no_random)]
    header = ["key", "paper name", "timm name (pinned tag)", "classes", "tokens", "pooling",
              "dataset", "weights", "preprocessing"]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(f"`{c}`" if i in (0, 2) else c
                                    for i, c in enumerate(row)) + " |")
        noted = [v for v in list_variants(include_random=False) if v.note]
        if noted:
            print()
            for v in noted:
                print(f"- `{v.key}`: {v.note}.")
    else:
        print(_table(rows, header))
    return 0


def _dataset(args: argparse.Namespace):
    from ..datasets.kinds import build_dataset
    from ..model.registry import get_variant

    return build_dataset(args.data, args.data_dir, num_classes=get_variant(args.variant).classes,
                         n_per_class=args.n_per_class, split=args.split, download=args.download)


def _model(args: argparse.Namespace, dataset):
    from ..model.loading import load_variant

    model = load_variant(args.variant, pretrained=not args.random_init, weights=args.weights,
                         device=args.device, seed=args.seed)
    print(f"{args.variant}: {model.vitcls_info.weights_id}; {len(dataset)} images "
          f"({dataset.selection()})", file=sys.stderr)
    return model


def _check_cheap(args: argparse.Namespace, command: str = "cache") -> None:
    """Checked before any weights load: the variant (for the data: a random timm head takes its
    classes) and the dataset's arguments, in well under a second, then what the family cannot
    do: extract and evaluate need a class head, extract needs tokens (a CNN has none)."""
    from ..model.registry import get_variant, variant_for_data

    spec = get_variant(args.variant) if command == "cache" else variant_for_data(
        args.variant, args.data, say=lambda line: print(line, file=sys.stderr))
    args.variant = spec.key  # a random timm head takes the dataset's classes
    if args.data == "toy" and args.data_dir:
        raise VitclsError(f"--data toy is generated, not read from disk: drop --data-dir "
                          f"{args.data_dir}")
    if command != "cache" and not spec.has_head:
        from ..base.errors import NoClassHeadError
        from ..model.projection import no_head_message

        raise NoClassHeadError(no_head_message(spec.key))
    if command == "extract" and not spec.is_vit:
        from ..model.projection import no_tokens_message

        raise VitclsError(no_tokens_message(spec.key))


def cmd_evaluate(args: argparse.Namespace) -> int:
    _check_cheap(args, "evaluate")
    from ..analysis.evaluation import evaluate

    dataset = _dataset(args)
    model = _model(args, dataset)
    result = evaluate(model, dataset, batch_size=args.batch_size, num_workers=args.workers,
                      progress=not args.quiet)
    print(f"{args.variant} on {dataset.name}: top-1 {100 * result['top1']:.2f}% "
          f"({result['correct']}/{result['images']})"
          + (f", {result['unreadable']} unreadable images skipped" if result["unreadable"] else ""))
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    _check_cheap(args, "extract")
    _check_out(args.out)
    from ..stores.extraction import DEFAULT_KINDS, REMOVAL_CHUNK, extract, open_store
    from ..stores.format import check_out_folder
    from ..stores.reader import store_room
    from ..model.perturbations import TokenRemoval, parse_perturbation

    from ..stores.shards import missing_shards, parse_shard

    perturbation = parse_perturbation(args.perturb) if args.perturb else None
    shard = parse_shard(args.shard) if args.shard else None
    dataset = _dataset(args)
    check_out_folder(args.out, "--out", needed=store_room(args.out, args.variant, dataset,
                                                          args.kinds or DEFAULT_KINDS))
    model = _model(args, dataset)
    path = extract(model, dataset, args.out, batch_size=args.batch_size,
                   num_workers=args.workers, precision=args.precision, force=args.force,
                   progress=not args.quiet, perturbation=perturbation,
                   kinds=args.kinds or DEFAULT_KINDS, shard=shard)
    if shard is not None:
        from ..stores.format import read_manifest

        manifest = read_manifest(path, "rerun the shard")
        unit = manifest["batch_size"] * (REMOVAL_CHUNK if isinstance(perturbation, TokenRemoval)
                                         else 1)
        missing = [] if manifest.get("status") == "complete" else missing_shards(
            path, len(dataset), unit, shard[1])
        print(f"store: {path}\nshard {shard[0]}/{shard[1]} done; the store is " + (
            f"waiting for shard(s) {', '.join(f'{i}/{shard[1]}' for i in missing)} (run them "
            "with the same settings)" if missing else "complete"))
        return 0
    results = open_store(path)
    counts = results.manifest.get("counts", {})
    print(f"store: {path}")
    print(f"images: {counts.get('images')}  unreadable (skipped): {counts.get('unreadable')}  "
          f"converted to RGB: {counts.get('converted_to_rgb')}  EXIF orientation not applied: "
          f"{counts.get('exif_orientation_ignored', 0)}")
    files = results.manifest.get("files", {})
    if args.verbose:
        for key, names in files.items():
            for name in names:
                print(f"  {key.replace('_', ' ')}: {name}")
    elif files.get("unreadable"):
        print(f"  skipped: {', '.join(files['unreadable'][:5])}"
              + (" ..." if len(files["unreadable"]) > 5 else "") + " (--verbose lists all; "
              "the manifest's 'files' has them)")
    print(f"sites: {len(results.sites)}  tokens: {results.rank.shape[2]}  "
          f"top-1 accuracy: {100 * results.accuracy:.2f}%"
          + (f"  perturbation: {args.perturb}" if perturbation else ""))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    _check_cheap(args)
    _check_out(args.out)
    from ..datasets.kinds import build_dataset
    from ..model.registry import get_variant
    from ..stores import stimulus_cache
    from ..stores.format import check_out_folder

    spec = get_variant(args.variant)
    dataset = build_dataset(args.data, args.data_dir, num_classes=spec.classes,
                            n_per_class=args.n_per_class, split=args.split)
    stimulus_cache.require(dataset)
    check_out_folder(args.out, "--out")  # its room is reserved before the first image decodes
    found = stimulus_cache.lookup(stimulus_cache.use(dataset, args.out), spec.preprocess)
    found = found if found is not None and found.intact() else None
    path = found.path if found else stimulus_cache.build(
        dataset, spec.preprocess, args.out, num_workers=args.workers, progress=not args.quiet,
        verify=True)
    what = "already cached" if found else f"cached {len(dataset)} images"
    print(f"{what} (geometry {stimulus_cache.geometry_tag(spec.preprocess)}): {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import RUNS, main_run, run_settings
    from ..stores.format import check_out_folder

    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops a run as Ctrl-C does
    try:
        require_pages(run_settings(args))
        check_out_folder(RUNS, "the book's runs folder", needed=16 * 2**20)  # a few pages
        if args.executor:
            from .cluster import main_submit

            return main_submit(args)
        return main_run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame) -> None:
    """SIGTERM's handler in ``vitcls run``: kernels and local jobs stop, no page after it."""
    raise KeyboardInterrupt


def require_pages(settings: dict) -> None:
    """An error saying why, when a run's settings (:func:`runner.run_settings`) plan no page:
    each variant's chapters, as the notebook rules give them."""
    from .runner import chapters, plan

    if any(plan(settings["runs"], settings["pattern"], Path("results"), settings["device"],
                profile=profile, extra=settings["extra"]) for profile in settings["profiles"]):
        return
    where = []
    for run in settings["runs"]:
        stems = {j.notebook.stem for j in plan([run], "*", Path("results"), "auto") if j.variant}
        found = [name for name, notebooks in chapters().items() if stems & set(notebooks)]
        where.append(f"{run.key} on {run.dataset} has pages in {', '.join(found) or 'none'}")
    raise VitclsError(f"nothing to run: no notebook matching {settings['pattern']!r} applies "
                      f"to the variants ({'; '.join(where)}; running/notebook_rules says why); "
                      "pick --notebooks accordingly")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitcls", description="ViT class-embedding-space analyses (Vilas et al. 2023).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("variants", help="list the model variants of the registry")
    p.add_argument("--no-random", action="store_true", help="hide the random-init controls")
    p.add_argument("--markdown", action="store_true", help="a markdown table (for the book)")
    p.set_defaults(func=cmd_variants)

    def model_and_data(p: argparse.ArgumentParser) -> None:
        from ..datasets.kinds import KINDS

        p.add_argument("--variant", required=True, help="registry key (see `vitcls variants`)")
        w = p.add_mutually_exclusive_group()
        w.add_argument("--weights", help="checkpoint file (safetensors or torch state dict)")
        w.add_argument("--random-init", action="store_true", help="timm's default init, seeded")
        p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random init (default 0)")
        p.add_argument("--data", required=True, choices=KINDS, help="dataset kind")
        p.add_argument("--data-dir", help="dataset root: folder ROOT/<wnid or index>/<image>; "
                       "imagenet-s the ImageNetS919 folder; cifar100 the folder holding "
                       "cifar-100-python/; none for toy")
        p.add_argument("--split", default=None, help="imagenet-s: validation (default) or "
                       "test; toy: val (default), train or probe-train")
        p.add_argument("--n-per-class", type=positive_int, default=None,
                       help="images per class (defaults: imagenet-s 5, cifar100 5, toy all)")
        p.add_argument("--download", action="store_true", help="cifar100: download if missing")
        p.add_argument("--batch-size", type=batch_size_arg, default=16,
                       help="images per forward, or auto: the largest that fits the GPU")
        p.add_argument("--device", type=device_name, default="auto",
                       help="auto (cuda if present), cpu, cuda:1")
        p.add_argument("--workers", type=non_negative_int, default=None, help="image decoding workers")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("extract", help="project every token at every block onto class space "
                       "and store ranks, top-1 classes and true-class logits")
    model_and_data(p)
    p.add_argument("--out", required=True, help="root folder of extraction stores")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--force", action="store_true", help="recompute a complete store")
    p.add_argument("--verbose", action="store_true", help="list the files skipped, converted "
                   "or used without their EXIF rotation")
    p.add_argument("--kinds", nargs="+", default=None, help="site kinds per block (default: "
                   "resid_post attn_out mlp_out)")
    p.add_argument("--shard", default=None, help="i/n (0-based): fill the i-th of n shards of "
                   "the store, so that n processes (GPUs, a SLURM array) write it together")
    p.add_argument("--perturb", default=None, help="run under a perturbation: self_only, "
                   "self_only+prefix, no_cls, no_cls+renorm (each optionally @blocks, e.g. "
                   "self_only@0,1), keep_class, keep_context (optionally +paper)")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("evaluate", help="top-1 accuracy of a variant on a stimulus set")
    model_and_data(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("cache", help="decode a variant's stimuli once (resize and crop) into "
                       "the results folder, for every later pass over them")
    p.add_argument("--variant", required=True, help="registry key: its preprocessing's geometry")
    p.add_argument("--data", required=True, choices=["folder", "imagenet-s"],
                   help="dataset kind (image files)")
    p.add_argument("--data-dir", required=True, help="dataset root")
    p.add_argument("--split", default=None, help="imagenet-s: validation (default) or test")
    p.add_argument("--n-per-class", type=positive_int, default=None,
                   help="images per class (default: imagenet-s 5, folder all)")
    p.add_argument("--out", required=True, help="the results folder the stores go to")
    p.add_argument("--workers", type=non_negative_int, default=None,
                   help="decoding processes (default: up to 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("run", help="execute the figure notebooks for each variant into "
                       "book/runs/ (papermill), for the book")
    p.add_argument("--config", help="a run file (YAML): variants with their weights, data and "
                   "resources, and the settings profile; see vitcls_utils/running/run_file.py")
    p.add_argument("--profile", choices=["corrected", "authors", "paper"], default=None,
                   help="corrected, or authors (their choices; 'paper' is its old name)")
    p.add_argument("--variants", nargs="+", default=None,
                   help="keys, or groups: toy (toy toy_gap toy_random toy_convit), paper, "
                   "paper_random, vit_original, ghiasi, convit (each with _random) (default: toy)")
    p.add_argument("--notebooks", default=None, help="glob on notebook names, e.g. 'tab1*', "
                   "or a chapter: chapter1 ... chapter8 (default: all)")
    p.add_argument("--device", type=device_name, default=None,
                   help="auto (default), cpu, cuda, cuda:1")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="notebooks run at once, each worker in a warm kernel (and on a GPU "
                   "of its own when there are several)")
    p.add_argument("--data", default=None, help="dataset kind for every variant (default: "
                   "each variant's own: toy, imagenet-s or cifar100)")
    p.add_argument("--data-dir", help="dataset root for non-toy variants")
    p.add_argument("--weights", nargs="+", default=None, metavar="KEY=FILE",
                   help="checkpoint files per variant, e.g. vit_b16_cifar100=ckpt.pt")
    p.add_argument("--results-dir", default=None, help="extraction stores (default results/)")
    p.add_argument("--force", action="store_true", help="re-run up-to-date notebooks")
    p.add_argument("--devices", default=None, help="comma-separated devices the workers (or "
                   "local jobs) take in turn, e.g. cuda:0,cuda:1 (cpu,cpu stands in for two)")
    p.add_argument("--executor", choices=["local", "slurm"], default=None,
                   help="submit one job per variant through submitit: on SLURM, or as local "
                   "processes; a rerun submits only the variants with missing pages")
    p.add_argument("--no-wait", action="store_true", help="with --executor: print the job "
                   "ids and return (the comparisons then need a later run)")
    for flag, kind, what in (("--partition", str, "SLURM partition"),
                             ("--gpus-per-job", non_negative_int, "GPUs per job (default 1)"),
                             ("--cpus-per-job", positive_int, "CPUs per job (default 8)"),
                             ("--time-min", positive_int, "time limit per job in minutes "
                              "(default 240)"),
                             ("--mem-gb", positive_int, "memory per job in GB (default 64)"),
                             ("--shards", positive_int, "extraction jobs (an array) filling "
                              "each variant's main store before its notebooks (default 1)")):
        p.add_argument(flag, type=kind, default=None, help=f"with --executor: {what}; "
                       "overrides the run file's cluster section")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VitclsError as exc:
        print(f"vitcls: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vitcls: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
