"""Command line: turns flags into a config and calls a recipe or tool; nothing else."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Callable

from cxrgan import distributed
from cxrgan.errors import CxrganError, RankAgreedError

Command = Callable[[argparse.Namespace], None]
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Command, str]] = {}


def command(name: str, help_text: str, flags: Callable[[argparse.ArgumentParser], None]):
    """Register the decorated function as subcommand ``name`` ("compare", "data info"); ``flags`` adds its options."""

    def decorate(run: Command) -> Command:
        COMMANDS[name] = (flags, run, help_text)
        return run

    return decorate


# ---- shared flags --------------------------------------------------------------------------------------------
def add_train_flags(parser: argparse.ArgumentParser, model: str = "resnet18") -> None:
    # CPU defaults a user would pick (those of the recipes): ResNet-18 at 64 px, 8 epochs with a cosine schedule from
    # lr 1e-3, random flips, bf16 autocast where it runs natively (about 2x fp32 on this project's CPUs).
    group = parser.add_argument_group("classifier training")
    group.add_argument("--model", default=model, help="resnet18, densenet121 or small-cnn (default %(default)s)")
    group.add_argument("--epochs", type=int, default=8, help="maximum epochs (default %(default)s)")
    group.add_argument("--batch-size", type=int, default=64)
    group.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default %(default)s)")
    group.add_argument("--patience", type=int, default=3, help="early-stopping patience on val AUC")
    group.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                       help="autocast precision; auto (default) = bf16 where the device runs it natively, else fp16 "
                            "with a gradient scaler on CUDA, else fp32")
    group.add_argument("--augment", default="flip", choices=["none", "flip", "flip-affine"],
                       help="on-the-fly augmentation of training batches (default %(default)s)")
    group.add_argument("--lr-schedule", default="cosine", choices=["constant", "cosine"],
                       help="learning-rate schedule (default %(default)s)")
    group.add_argument("--weights", default=None, help="local pretrained weights file (default: from scratch)")
    group.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    group.add_argument("--data-workers", type=int, default=0,
                       help="processes reading training batches from the data file (default 0: the training process)")
    group.add_argument("--no-sync-bn", action="store_true",
                       help="under torchrun, BatchNorm statistics per process instead of over the global batch")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def train_config(args: argparse.Namespace):
    from cxrgan.classify import TrainConfig
    from cxrgan.device import resolve_amp

    amp = resolve_amp(args.precision, args.device)
    return TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       patience=args.patience, bf16=amp == "bf16", fp16=amp == "fp16", device=args.device,
                       augment=args.augment, lr_schedule=args.lr_schedule, weights_path=args.weights,
                       progress=not args.no_progress, data_workers=args.data_workers,
                       sync_batchnorm=not args.no_sync_bn)


def add_grid_flags(parser: argparse.ArgumentParser) -> None:
    """``--shard`` and ``--workers``: how a run's cells are spread over machines and local processes."""
    group = parser.add_argument_group("spreading the cells")
    group.add_argument("--shard", default=None, metavar="K/N",
                       help="run the K-th of N disjoint subsets of the cells into the shared run directory "
                            "OUT/<run>-shared (or --resume RUN_DIR); each machine or job runs one shard")
    group.add_argument("--workers", type=int, default=1, metavar="N",
                       help="run the cells in N local processes, each with a slice of the cores or one GPU")


def grid_options(args: argparse.Namespace) -> dict:
    """``shard``, ``workers`` and ``device`` arguments of ``run_recipe`` from the flags."""
    from cxrgan.recipes.engine import Shard

    if args.workers < 1:
        raise CxrganError(f"--workers {args.workers}: must be at least 1")
    return {"shard": Shard.parse(args.shard) if args.shard else None, "workers": args.workers,
            "device": getattr(args, "device", "auto")}


def add_generator_flags(parser: argparse.ArgumentParser, generator: str = "dcgan") -> None:
    """``--gan-steps`` / ``--gan-width``; the help states the CPU preset of ``generator`` (the one the command trains)."""
    from cxrgan.generators import generator_class

    preset = generator_class(generator).cpu_preset
    group = parser.add_argument_group("generator-backed methods")
    group.add_argument("--gan-steps", type=int, default=None,
                       help=f"GAN training steps (CPU default {preset['steps']})")
    group.add_argument("--gan-width", type=int, default=None, help=f"GAN widths ngf = ndf (CPU default {preset['ngf']})")


def generator_settings(args: argparse.Namespace):
    """The run's ``GeneratorSettings`` from ``--gan-steps``, ``--gan-width`` and ``--full``."""
    from cxrgan.generators import GeneratorSettings

    return GeneratorSettings(steps=args.gan_steps, width=args.gan_width, full=args.full)


def parse_ratio(text: str) -> tuple[int, int]:
    try:
        negatives, positives = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NEG:POS such as 3:1, got {text!r}") from None
    return negatives, positives


# The range of every numeric flag of every command, by flag name; checked right after parsing, before anything is
# read or written. Flags not listed are integers >= 0. Every integer is at most INT_MAX (beyond it torch and numpy
# overflow) and every float finite.
FLAG_RANGES = {
    "seeds": "[1, 10000]", "first_seed": "[0, 2147483647]", "seed": "[0, 2147483647]", "epochs": "[1, inf)",
    "batch_size": "[1, inf)", "lr": "(0, inf)", "workers": "[1, 1024]", "data_workers": "[0, 1024]",
    "gan_steps": "[1, inf)", "gan_width": "[1, 4096]", "ngf": "[1, 4096]", "ndf": "[1, 4096]", "size": "[1, 16384]",
    "ema_decay": "[0, 1)", "guidance_scale": "[0, inf)", "n": "[1, inf)", "feature_epochs": "[1, inf)",
    "tstr_images": "[1, inf)", "fidelity_images": "[1, inf)", "n_findings": "[1, inf)", "min_positives": "[1, inf)",
    "train_fraction": "(0, 1]", "threshold": "(0, 1]", "ratio": "(0, inf)", "majority": "[1, inf)",
    "generator_seeds": "[1, 10000]",
}
INT_MAX = 2**31 - 1


def check_flag_ranges(args: argparse.Namespace) -> None:
    """Refuse a numeric flag outside its range (``FLAG_RANGES``) in one line naming the flag and the value."""
    for dest, value in vars(args).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        flag = "--" + dest.replace("_", "-")
        if not math.isfinite(value):
            raise CxrganError(f"{flag} {value}: must be a finite number")
        text = FLAG_RANGES.get(dest, "[0, inf)")
        low, high = (float(v) for v in text[1:-1].split(","))
        below = value <= low if text[0] == "(" else value < low
        above = value >= high if text[-1] == ")" else value > high
        if below:
            raise CxrganError(f"{flag} {value}: must be {'at least' if text[0] == '[' else 'above'} {_plain(low)}"
                              + (f" (range {text})" if high < math.inf else ""))
        if above:
            raise CxrganError(f"{flag} {value}: must be {'at most' if text[-1] == ']' else 'below'} {_plain(high)}"
                              + f" (range {text})")
        if isinstance(value, int) and value > INT_MAX:
            raise CxrganError(f"{flag} {value}: must be at most {INT_MAX}")


def _plain(number: float) -> str:
    return str(int(number)) if number.is_integer() else str(number)


def shell_command() -> str:
    """The command line as typed, so reports can show exactly how a run was made."""
    return " ".join(shlex.quote(a) for a in ["cxrgan", *sys.argv[1:]])


# ---- compare -------------------------------------------------------------------------------------------------
def _compare_flags(parser: argparse.ArgumentParser) -> None:
    from cxrgan.balance import BALANCERS
    from cxrgan.recipes.compare import CLASSIC_METHODS

    parser.add_argument("data", help="compact .npz file with train/val/test splits")
    parser.add_argument("--methods", default=",".join(CLASSIC_METHODS),
                        help=f"comma-separated methods (default %(default)s); available: {', '.join(sorted(BALANCERS))}; "
                             "each --synthetic FILE adds synthetic:<stem>")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default %(default)s)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--baseline", default="none", help="method the DeLong tests compare against")
    parser.add_argument("--out", default="runs", help="folder for numbered run directories")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run")
    parser.add_argument("--target", default="labels", choices=["labels", "findings"])
    parser.add_argument("--uncertainty", default="ignore", choices=["zeros", "ones", "ignore"])
    parser.add_argument("--train-fraction", type=float, default=1.0, help="stratified fraction of the train split")
    parser.add_argument("--imbalance", type=parse_ratio, default=None, metavar="NEG:POS",
                        help="subsample the training split to this class ratio, e.g. 3:1")
    parser.add_argument("--full", action="store_true", help="paper-size settings for generator-backed methods")
    add_generator_flags(parser)
    parser.add_argument("--gan-extra-data", default=None, metavar="FILE",
                        help="binary .npz whose training split joins a CycleGAN's domains (cyclegan-complement-extra)")
    parser.add_argument("--allow-patient-overlap", action="store_true",
                        help="accept a patient in two splits (counted and printed) instead of refusing the data")
    parser.add_argument("--allow-unknown-patients", action="store_true",
                        help="accept a file whose split was made per image with unknown patients")
    add_external_flags(parser, default_note="none")
    add_synthetic_flags(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="check data and config, print the grid and an estimated wall time, train nothing")
    add_grid_flags(parser)
    add_train_flags(parser)


def add_external_flags(parser: argparse.ArgumentParser, default_note: str) -> None:
    group = parser.add_argument_group("external sites")
    group.add_argument("--external", action="append", default=None, metavar="FILE",
                       help=f"binary .npz of another hospital, every row scored by every model (repeatable; default: "
                            f"{default_note})")
    group.add_argument("--no-external", action="store_true", help="score no external site")
    group.add_argument("--external-labels", default="", metavar="SITE=OURS,...",
                       help="map the sites' class names to this data's, e.g. abnormal=pneumonia")


def external_sites(args: argparse.Namespace, default: tuple[str, ...] = ()) -> dict:
    """``external`` and ``external_labels`` config fields from the flags (``default`` when --external is absent)."""
    from cxrgan.data.external import parse_label_map

    sites = () if args.no_external else tuple(args.external) if args.external else default
    return {"external": sites, "external_labels": parse_label_map(args.external_labels)}


def add_synthetic_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("synthetic images made elsewhere")
    group.add_argument("--synthetic", action="append", default=None, metavar="FILE",
                       help="an .npz in the data format or a folder of class folders (PNG / JPEG / DICOM): one more "
                            "row, synthetic:<file stem> (repeatable); checked for copies of evaluation images first")
    group.add_argument("--synthetic-mode", default="balance", choices=["balance", "add", "pretrain"],
                       help="balance (default): per seed as many images of the minority class (multi-label: of "
                            "each augmented finding) as the dcgan (dcgan-rare) row adds; add: every image; pretrain: "
                            "the synth-pretrain schedule on them")


def synthetic_files(args: argparse.Namespace, **fixed):
    """The run's ``SyntheticFiles`` from ``--synthetic`` and ``--synthetic-mode`` (``fixed``: e.g. the ratio)."""
    from cxrgan.data.synthetic import SyntheticFiles

    return SyntheticFiles(tuple(args.synthetic or ()), args.synthetic_mode, **fixed)


def method_list(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


@command("compare", "compare balancing methods over seeds on one dataset", flags=_compare_flags)
def _compare(args: argparse.Namespace) -> None:
    from cxrgan.recipes.compare import CompareConfig, run_compare

    config = CompareConfig(
        data=args.data, methods=method_list(args.methods), seeds=args.seeds,
        first_seed=args.first_seed, baseline=args.baseline, target=args.target, uncertainty=args.uncertainty,
        train_fraction=args.train_fraction, imbalance=args.imbalance, train=train_config(args),
        generators=generator_settings(args), extra_data=args.gan_extra_data,
        allow_patient_overlap=args.allow_patient_overlap, allow_unknown_patients=args.allow_unknown_patients,
        synthetic=synthetic_files(args), **external_sites(args),
    )
    run_compare(config, args.out, resume_dir=args.resume, command=shell_command(), dry_run=args.dry_run,
                progress=not args.no_progress, **grid_options(args))


# ---- data ----------------------------------------------------------------------------------------------------
def _prepare_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="a folder (Kermany layout, NIH, CheXpert), a CSV, or an .npz (MedMNIST)")
    parser.add_argument("--size", type=int, default=64, help="output side length in pixels")
    parser.add_argument("--out", required=True, help="output compact .npz")
    parser.add_argument("--workers", type=int, default=2, help="parallel image decoders")
    parser.add_argument("--allow-patient-overlap", action="store_true",
                        help="accept a patient in two splits (counted and printed) instead of refusing the source")
    parser.add_argument("--patient-id", default=None, metavar="REGEX",
                        help="image folders: the patient of each image from its file name (the first group, else the "
                             r"whole match), e.g. '^(\d{8})_\d{3}' for NIH names; the split then groups by patient")
    parser.add_argument("--patient-csv", default=None, metavar="FILE",
                        help="image folders: a CSV with columns filename and patient_id mapping every image to its "
                             "patient")


@command("data prepare", "convert a CXR dataset layout into the compact .npz format", flags=_prepare_flags)
def _data_prepare(args: argparse.Namespace) -> None:
    from cxrgan.data.prepare import prepare

    path = prepare(args.src, size=args.size, out=args.out, workers=args.workers,
                   allow_patient_overlap=args.allow_patient_overlap, patient_regex=args.patient_id,
                   patient_csv=args.patient_csv)
    print(f"wrote {path}")


def _info_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="compact .npz, MedMNIST .npz, or a CheXpert / NIH CSV")
    parser.add_argument("--allow-patient-overlap", action="store_true",
                        help="report patients found in several splits instead of refusing the source")


@command("data info", "print per-split and per-class (or per-finding) counts", flags=_info_flags)
def _data_info(args: argparse.Namespace) -> None:
    from cxrgan.data.info import info

    print(info(args.path, allow_patient_overlap=args.allow_patient_overlap))


# ---- report and workers ----------------------------------------------------------------------------------------
def _report_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a compare or recipe run directory")


@command("report", "rebuild a run's tables (with today's statistics) and its report.html from its stored scores",
         flags=_report_flags)
def _report(args: argparse.Namespace) -> None:
    from cxrgan.recipes.engine import RESULTS_NAME, report_run
    from cxrgan.report.html import write_report

    run_dir = Path(args.run_dir)
    if (run_dir / "config.json").exists() and (run_dir / RESULTS_NAME).exists():
        report_run(run_dir)  # a compare or recipe run: tables re-tabulated without retraining
    else:
        print(f"wrote {write_report(run_dir)}")  # a generator run or an audit folder


def _run_cells_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a compare or recipe run directory")
    parser.add_argument("--worker", default="1/1", metavar="K/N", help="this worker's number, for its log lines")
    parser.add_argument("--no-progress", action="store_true")


@command("run-cells", "run the cells of RUN_DIR that no other process has claimed (the workers of --workers)",
         flags=_run_cells_flags)
def _run_cells(args: argparse.Namespace) -> None:
    from cxrgan.recipes.engine import recipe_from_run, run_recipe

    run_recipe(recipe_from_run(args.run_dir), out=None, resume_dir=args.run_dir, progress=not args.no_progress,
               report=False, tag=f"worker {args.worker}: ")


# ---- entry point ---------------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse with the one error line every cxrgan error has (its default prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"cxrgan: error: {self.prog}: {message} (see {self.prog} --help)\n"
                  if distributed.env_rank() == 0 else None)


def build_parser() -> argparse.ArgumentParser:
    import cxrgan.cli_generators  # (registers train-gan, sample, generators list, audit, cam)
    import cxrgan.cli_recipes  # noqa: F401  (registers the `cxrgan recipe ...` commands)
    from cxrgan.plugins import load_plugins

    load_plugins()  # installed packages' generators and methods (entry points), before any help or choice is built

    parser = Parser(prog="cxrgan", description=__doc__.split(":")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (add_arguments, run, help_text) in COMMANDS.items():
        parts = name.split()
        target = sub
        if len(parts) == 2:  # "data prepare": a group command with its own subcommands
            if parts[0] not in groups:
                group = sub.add_parser(parts[0], help=f"{parts[0]} tools")
                groups[parts[0]] = group.add_subparsers(dest="subcommand", required=True)
            target = groups[parts[0]]
        child = target.add_parser(parts[-1], help=help_text, description=help_text.replace("%%", "%"))
        add_arguments(child)
        child.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Under torchrun every process runs it; rank 0 alone prints results and the errors that every
    process raised alike, another rank prints only an error of its own (prefixed with its rank)."""
    args = build_parser().parse_args(argv)
    rank = distributed.env_rank() if distributed.launched_by_torchrun() else 0
    prefix = f"process {rank}: " if rank else ""
    stdout = sys.stdout
    try:
        if rank:
            sys.stdout = open(os.devnull, "w")
        check_flag_ranges(args)
        distributed.setup(getattr(args, "device", "auto"))
        if hasattr(args, "device"):  # before any CUDA work: cuBLAS reads its workspace setting once
            from cxrgan.device import configure_determinism, resolve_device

            configure_determinism(resolve_device(args.device))
        args.run(args)
    except RankAgreedError as exc:
        if rank == 0:
            print(f"cxrgan: error: {exc}", file=sys.stderr)
        return 2
    except CxrganError as exc:
        print(f"cxrgan: error: {prefix}{exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave cannot be read or written: one line, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"cxrgan: error: {prefix}{where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxrgan: interrupted; rerun with --resume RUN_DIR to continue", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
        if sys.stdout is not stdout:
            sys.stdout.close()
            sys.stdout = stdout
    return 0


if __name__ == "__main__":
    sys.exit(main())
