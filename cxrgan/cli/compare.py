"""``cxrgan compare`` (every method x seed on one dataset), ``cxrgan report`` (a run's tables rebuilt from its
stored scores) and ``cxrgan run-cells`` (the worker processes of ``--workers``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxrgan.cli.flags import (add_external_flags, add_generator_flags, add_grid_flags, add_synthetic_flags,
                              add_target_flags, add_train_flags, command, generator_settings, grid_options,
                              method_list, parse_ratio, run_spec, shell_command, synthetic_files, train_config)


def _compare_flags(parser: argparse.ArgumentParser) -> None:
    from cxrgan.balance import BALANCERS
    from cxrgan.recipes.compare_setup import CLASSIC_METHODS

    parser.add_argument("data", help="compact .npz file with train/val/test splits")
    parser.add_argument("--methods", default=",".join(CLASSIC_METHODS),
                        help=f"comma-separated methods (default %(default)s); available: {', '.join(sorted(BALANCERS))}; "
                             "each --synthetic FILE adds synthetic:<stem>")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default %(default)s)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--baseline", default="none", help="method the DeLong tests compare against")
    parser.add_argument("--out", default="runs", help="folder for numbered run directories")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run, or extend a finished one with more --seeds or --methods")
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
    add_target_flags(parser)
    add_train_flags(parser)


@command("compare", "compare balancing methods over seeds on one dataset", flags=_compare_flags)
def _compare(args: argparse.Namespace) -> None:
    from cxrgan.recipes.compare import CompareConfig, run_compare

    config = CompareConfig(
        run=run_spec(args, args.data), methods=method_list(args.methods), baseline=args.baseline, target=args.target,
        uncertainty=args.uncertainty, train_fraction=args.train_fraction, imbalance=args.imbalance,
        train=train_config(args), generators=generator_settings(args), extra_data=args.gan_extra_data,
        synthetic=synthetic_files(args),
    )
    run_compare(config, args.out, resume_dir=args.resume, command=shell_command(args), dry_run=args.dry_run,
                progress=not args.no_progress, **grid_options(args))


def _report_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a compare or recipe run directory")


@command("report", "rebuild a run's tables (with today's statistics) and its report.html from its stored scores",
         flags=_report_flags)
def _report(args: argparse.Namespace) -> None:
    import cxrgan.recipes.all  # noqa: F401  (every recipe registers itself, so a run's kind can be rebuilt)
    from cxrgan.engine.run import report_run
    from cxrgan.engine.store import RESULTS_NAME
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
    import cxrgan.recipes.all  # noqa: F401  (every recipe registers itself, so a run's kind can be rebuilt)
    from cxrgan.engine.recipe import recipe_from_run
    from cxrgan.engine.run import run_recipe

    run_recipe(recipe_from_run(args.run_dir), out=None, resume_dir=args.run_dir, progress=not args.no_progress,
               report=False, tag=f"worker {args.worker}: ")
