"""The command registry and what commands share: flag groups and the configs built from them (the run spec, the
classifier settings, generator settings, grid options), built once here and handed on."""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
from typing import Callable

from cxrgan.errors import CxrganError

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
    add_checkpoint_flags(group)
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_checkpoint_flags(group) -> None:
    """``--checkpoint-seconds`` / ``--checkpoint-epochs``: how often a classifier writes its resumable checkpoint."""
    group.add_argument("--checkpoint-seconds", type=float, default=60.0, metavar="S",
                       help="write a classifier's resumable checkpoint after the first epoch ending S seconds after "
                            "the last write (default %(default)s; 0 = off): a kill loses at most about S s + 1 epoch")
    group.add_argument("--checkpoint-epochs", type=int, default=0, metavar="K",
                       help="also write it every K epochs (default 0 = off; 1 = every epoch)")


def checkpoint_settings(args: argparse.Namespace) -> dict:
    """The ``TrainConfig`` checkpoint fields from the flags."""
    return {"checkpoint_seconds": args.checkpoint_seconds, "checkpoint_epochs": args.checkpoint_epochs}


def train_config(args: argparse.Namespace):
    from cxrgan.classify import TrainConfig
    from cxrgan.device import resolve_amp

    amp = resolve_amp(args.precision, args.device)
    return TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       patience=args.patience, bf16=amp == "bf16", fp16=amp == "fp16", device=args.device,
                       augment=args.augment, lr_schedule=args.lr_schedule, weights_path=args.weights,
                       progress=not args.no_progress, data_workers=args.data_workers,
                       sync_batchnorm=not args.no_sync_bn, **checkpoint_settings(args))


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
    from cxrgan.engine.cells import Shard

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
    "generator_seeds": "[1, 10000]", "target_mde": "(0, 1)", "max_seeds": "[1, 10000]", "budget": "(0, inf)",
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


def shell_command(args: argparse.Namespace) -> str:
    """The command line as typed (the arguments ``main`` was given), so reports can show exactly how a run was made."""
    return " ".join(shlex.quote(a) for a in ["cxrgan", *getattr(args, "argv", sys.argv[1:])])


def add_external_flags(parser: argparse.ArgumentParser, default_note: str) -> None:
    group = parser.add_argument_group("external sites")
    group.add_argument("--external", action="append", default=None, metavar="FILE",
                       help=f"binary .npz of another hospital, every row scored by every model (repeatable; default: "
                            f"{default_note})")
    group.add_argument("--no-external", action="store_true", help="score no external site")
    group.add_argument("--external-labels", default="", metavar="SITE=OURS,...",
                       help="map the sites' class names to this data's, e.g. abnormal=pneumonia")


def external_sites(args: argparse.Namespace, default: tuple[str, ...] = ()) -> dict:
    """``external`` and ``external_labels`` of the run spec from the flags (``default`` when --external is absent;
    none for a command without the external-site flags)."""
    from cxrgan.data.external import parse_label_map

    if not hasattr(args, "no_external"):
        return {}
    sites = () if args.no_external else tuple(args.external) if args.external else default
    return {"external": sites, "external_labels": parse_label_map(args.external_labels)}


def run_spec(args: argparse.Namespace, data: str | tuple[str, ...], default_sites: tuple[str, ...] = ()):
    """The run's ``RunSpec`` from the flags every run command shares: seeds, sites, device, precision, patients,
    and the rounds of --target-mde."""
    from cxrgan.engine.spec import RunSpec

    return RunSpec(data=data, seeds=args.seeds, first_seed=args.first_seed,
                   allow_patient_overlap=args.allow_patient_overlap,
                   allow_unknown_patients=args.allow_unknown_patients, device=args.device,
                   precision=getattr(args, "precision", "auto"), **external_sites(args, default_sites),
                   **target_settings(args))


def add_target_flags(parser: argparse.ArgumentParser) -> None:
    """``--target-mde``, ``--budget`` and ``--max-seeds``: a run that adds seeds until its rows can see a given Δ."""
    from cxrgan.engine.spec import RunSpec
    from cxrgan.engine.target import RULE_HELP

    group = parser.add_argument_group("seeds until a target is detectable")
    group.add_argument("--target-mde", type=float, default=None, metavar="D",
                       help=f"{RULE_HELP}. --seeds is the first round")
    group.add_argument("--budget", type=_duration, default=None, metavar="DURATION",
                       help="wall time the rounds of --target-mde may spend, e.g. 60m, 1h30m, 45s; a round the "
                            "measured seconds per seed say would overrun it is shrunk or not started")
    group.add_argument("--max-seeds", type=int, default=RunSpec.max_seeds, metavar="N",
                       help="the most seeds any row of a --target-mde run gets (default %(default)s)")


def _duration(text: str) -> float:
    from cxrgan.engine.target import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def target_settings(args: argparse.Namespace) -> dict:
    """The RunSpec fields of --target-mde, --budget and --max-seeds (none for a command without them)."""
    if not hasattr(args, "target_mde"):
        return {}
    return {"target_mde": args.target_mde, "budget_seconds": args.budget, "max_seeds": args.max_seeds}


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


# ---- flags every recipe shares ------------------------------------------------------------------------------
KERMANY_SITE_NOTE = "for Kermany data, nih_pneumonia of the same image size when present (adult NIH, same labels)"


def add_run_flags(parser: argparse.ArgumentParser, default_seeds: int | None, seeds_help: str = "") -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--seeds", type=int, default=default_seeds,
                       help=seeds_help or "training seeds (default %(default)s)")
    group.add_argument("--first-seed", type=int, default=0)
    group.add_argument("--out", default="runs", help="folder for numbered run directories")
    group.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run, or extend a finished one with more --seeds or --methods")
    group.add_argument("--dry-run", action="store_true",
                       help="check data and config, print the grid and an estimated wall time, train nothing")
    group.add_argument("--device", default="auto",
                       help="auto (CUDA when present, with bf16 or fp16 autocast), cpu or cuda")
    group.add_argument("--data-workers", type=int, default=0,
                       help="processes reading classifier training batches (default 0: the training process)")
    group.add_argument("--no-progress", action="store_true", help="hide per-epoch bars (one line per cell stays)")
    group.add_argument("--allow-patient-overlap", action="store_true",
                       help="accept a patient in two splits (counted and printed) instead of refusing the data")
    group.add_argument("--allow-unknown-patients", action="store_true",
                       help="accept a data file whose split was made per image with unknown patients")
    add_grid_flags(parser)
    add_target_flags(parser)


def run(recipe, args: argparse.Namespace) -> None:
    from cxrgan.engine.run import run_recipe

    run_recipe(recipe, args.out, resume_dir=args.resume, command=shell_command(args), dry_run=args.dry_run,
               progress=not args.no_progress, **grid_options(args))


def classifier(args: argparse.Namespace, cpu, full):
    """The recipe's CPU or full classifier with the device, an --epochs override and, on a CUDA device, mixed
    precision (bf16 where the GPU has it natively, else fp16 with a gradient scaler); on the CPU the preset's bf16
    where the CPU runs it natively, else fp32; the checkpoint cadence of ``add_checkpoint_flags``."""
    from cxrgan.device import resolve_amp, resolve_device

    preset, chosen = full if args.full else cpu, resolve_amp("auto", args.device)
    amp = {}
    if resolve_device(args.device).type == "cuda":
        amp = {"bf16": chosen == "bf16", "fp16": chosen == "fp16"}
    elif preset.bf16 and chosen != "bf16":
        amp = {"bf16": False}
    return dataclasses.replace(preset, device=args.device, data_workers=args.data_workers, **amp,
                               **checkpoint_settings(args), **({"epochs": args.epochs} if args.epochs else {}))
