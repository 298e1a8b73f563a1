"""``cxrgan recipe NAME``: one command per published method; each turns its flags into the recipe's config."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import asdict

from cxrgan.cli import add_generator_flags, command, generator_settings, parse_ratio, shell_command

# ---- recipes -------------------------------------------------------------------------------------------------
def _dcgan_alpha_flags(parser: argparse.ArgumentParser) -> None:
    from cxrgan.recipes.dcgan_alpha import METHODS

    parser.add_argument("--data", required=True, help="Kermany-style binary .npz (normal / pneumonia)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS), help="rows of the table; the first is the baseline")
    parser.add_argument("--imbalance", type=parse_ratio, default=(3, 1), metavar="NEG:POS",
                        help="normal:pneumonia ratio of the training split (default 3:1, as the paper)")
    parser.add_argument("--tstr-images", type=int, default=1000, help="synthetic images per class for TSTR AUC")
    parser.add_argument("--epochs", type=int, default=None, help="classifier epochs (default: CPU 8, --full 30)")
    parser.add_argument("--out", default="runs")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR")
    parser.add_argument("--full", action="store_true", help="paper-size GANs and ResNet-18 training (GPU)")
    add_generator_flags(parser)
    parser.add_argument("--device", default="auto")


@command("recipe dcgan-alpha", "Sun & Li: DCGAN / cDCGAN(alpha) vs classic fixes, ResNet-18",
         flags=_dcgan_alpha_flags)
def _dcgan_alpha(args: argparse.Namespace) -> None:
    from cxrgan.recipes.dcgan_alpha import CPU_CLASSIFIER, FULL_CLASSIFIER, DcganAlphaConfig, run_dcgan_alpha

    train = FULL_CLASSIFIER if args.full else CPU_CLASSIFIER
    train = dataclasses.replace(train, device=args.device, **({"epochs": args.epochs} if args.epochs else {}))
    config = DcganAlphaConfig(data=args.data, seeds=args.seeds, first_seed=args.first_seed,
                              methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
                              imbalance=args.imbalance, train=train, tstr_images=args.tstr_images,
                              generators=generator_settings(args))
    run_dcgan_alpha(config, args.out, resume_dir=args.resume, command=shell_command())


def _cyclegan_complement_flags(parser: argparse.ArgumentParser) -> None:
    from cxrgan.recipes.cyclegan_complement import DEFAULT_DATA, DEFAULT_EXTRA_DATA, METHODS

    parser.add_argument("--data", default=DEFAULT_DATA, help="binary .npz, normal / pneumonia (default %(default)s)")
    parser.add_argument("--gan-extra-data", default=DEFAULT_EXTRA_DATA, metavar="FILE",
                        help="binary .npz whose training split joins the CycleGAN's domains only (default %(default)s)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS), help="rows of the table; the first is the baseline")
    parser.add_argument("--imbalance", type=parse_ratio, default=(3, 1), metavar="NEG:POS",
                        help="normal:pneumonia ratio of the training split (default 3:1, pneumonia the minority)")
    parser.add_argument("--fidelity-images", type=int, default=200, help="test images per class for translation fidelity")
    parser.add_argument("--epochs", type=int, default=None, help="classifier epochs (default: CPU 8, --full 30)")
    parser.add_argument("--out", default="runs")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR")
    parser.add_argument("--full", action="store_true", help="DenseNet-121 and the paper's CycleGAN sizes (GPU)")
    add_generator_flags(parser, generator="cyclegan")
    parser.add_argument("--device", default="auto")


@command("recipe cyclegan-complement", "Malygina et al.: CycleGAN complement oversampling (+ extra data) vs none",
         flags=_cyclegan_complement_flags)
def _cyclegan_complement(args: argparse.Namespace) -> None:
    from cxrgan.recipes.cyclegan_complement import (CPU_CLASSIFIER, FULL_CLASSIFIER, CycleganComplementConfig,
                                                    run_cyclegan_complement)

    train = FULL_CLASSIFIER if args.full else CPU_CLASSIFIER
    train = dataclasses.replace(train, device=args.device, **({"epochs": args.epochs} if args.epochs else {}))
    config = CycleganComplementConfig(data=args.data, extra_data=args.gan_extra_data, seeds=args.seeds,
                                      first_seed=args.first_seed, imbalance=args.imbalance,
                                      methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
                                      train=train, fidelity_images=args.fidelity_images,
                                      generators=generator_settings(args))
    run_cyclegan_complement(config, args.out, resume_dir=args.resume, command=shell_command())



def _multilabel_recipe_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None,
                        help="findings .npz, or a CheXpert / NIH CSV or folder (default: the NIH ChestX-ray14 subset)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--findings", default="", help="comma-separated findings to augment (default: the rarest)")
    parser.add_argument("--n-findings", type=int, default=3, help="how many rare findings to choose")
    parser.add_argument("--min-positives", type=int, default=16, help="floor on a chosen finding's training positives")
    parser.add_argument("--size", type=int, default=64, help="image side when decoding a CSV source")
    parser.add_argument("--epochs", type=int, default=None, help="classifier epochs (default: CPU 12, --full 30)")
    parser.add_argument("--out", default="runs")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR")
    parser.add_argument("--full", action="store_true", help="paper-size GANs and DenseNet-121 training (GPU)")
    add_generator_flags(parser)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dry-run", action="store_true", help="print the chosen findings and planned counts; train nothing")


def _multilabel_common(args: argparse.Namespace) -> dict:
    from cxrgan.recipes.cgan_regimes import CPU_CLASSIFIER, DEFAULT_DATA, FULL_CLASSIFIER

    train = FULL_CLASSIFIER if args.full else CPU_CLASSIFIER
    train = dataclasses.replace(train, device=args.device, **({"epochs": args.epochs} if args.epochs else {}))
    return dict(data=args.data or DEFAULT_DATA, seeds=args.seeds, first_seed=args.first_seed,
                findings=tuple(f.strip() for f in args.findings.split(",") if f.strip()), n_findings=args.n_findings,
                min_positives=args.min_positives, size=args.size, train=train,
                generators=generator_settings(args))


def _cgan_regimes_flags(parser: argparse.ArgumentParser) -> None:
    _multilabel_recipe_flags(parser)
    parser.add_argument("--regimes", default="0.01,0.1,0.5,1", help="nested training shares (default %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.15, help="share each augmented finding must reach")
    parser.add_argument("--uncertainty", default="ones", choices=["zeros", "ones", "ignore"])


@command("recipe cgan-regimes", "Sundaram & Hulkund: none / flip / label-vector cGAN across 1-100%% data regimes",
         flags=_cgan_regimes_flags)
def _cgan_regimes(args: argparse.Namespace) -> None:
    from cxrgan.recipes.cgan_regimes import CganRegimesConfig, plan_cgan_regimes, run_cgan_regimes
    from cxrgan.report.tables import to_markdown

    config = CganRegimesConfig(regimes=tuple(float(r) for r in args.regimes.split(",")), threshold=args.threshold,
                               uncertainty=args.uncertainty, **_multilabel_common(args))
    if args.dry_run:
        print(json.dumps(asdict(config), indent=2, default=str) + "\n\n" + to_markdown(plan_cgan_regimes(config)))
        return
    run_cgan_regimes(config, args.out, resume_dir=args.resume, command=shell_command())


def _dcgan_rare_flags(parser: argparse.ArgumentParser) -> None:
    _multilabel_recipe_flags(parser)
    parser.add_argument("--policy", default="zeros", choices=["zeros", "ones", "ignore"],
                        help="uncertainty policy of the GAN comparison (default %(default)s, as the paper)")
    parser.add_argument("--ratio", type=float, default=1.0, help="add images until positives = ratio x negatives")


@command("recipe dcgan-rare-findings", "Venugopal Sunitha: U-policy baselines, one DCGAN per rare finding",
         flags=_dcgan_rare_flags)
def _dcgan_rare_findings(args: argparse.Namespace) -> None:
    from cxrgan.recipes.dcgan_rare_findings import DcganRareConfig, plan_dcgan_rare_findings, run_dcgan_rare_findings
    from cxrgan.report.tables import to_markdown

    config = DcganRareConfig(policy=args.policy, ratio=args.ratio, **_multilabel_common(args))
    if args.dry_run:
        print(json.dumps(asdict(config), indent=2, default=str) + "\n\n" + to_markdown(plan_dcgan_rare_findings(config)))
        return
    run_dcgan_rare_findings(config, args.out, resume_dir=args.resume, command=shell_command())


def _sgan_flags(parser: argparse.ArgumentParser, default_seeds: int) -> None:
    parser.add_argument("--seeds", type=int, default=default_seeds)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="SGAN / CNN steps (default: see the recipe's CPU budget)")
    parser.add_argument("--norm", default=None, choices=["virtual", "batch"], help="discriminator normalisation")
    parser.add_argument("--generator-loss", default=None, choices=["feature-matching", "plain"])
    parser.add_argument("--out", default="runs")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR")
    parser.add_argument("--full", action="store_true", help="paper-size SGAN (width 64, 6000 steps, batch 64; GPU)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dry-run", action="store_true", help="print the config and the planned runs, train nothing")


def _sgan_config(args: argparse.Namespace, cpu, full):
    overrides = {k: v for k, v in (("steps", args.steps), ("norm", args.norm), ("generator_loss", args.generator_loss),
                                   ("device", args.device)) if v is not None}
    return dataclasses.replace(full if args.full else cpu, **overrides)


def _sgan_scarcity_flags(parser: argparse.ArgumentParser) -> None:
    from cxrgan.recipes.sgan_scarcity import DEFAULT_DATA, PER_CLASS

    parser.add_argument("--data", default=DEFAULT_DATA, help="binary .npz, normal / abnormal (default %(default)s)")
    parser.add_argument("--per-class", default=",".join(map(str, PER_CLASS)),
                        help="labelled images per class (default %(default)s)")
    _sgan_flags(parser, default_seeds=3)


@command("recipe sgan-scarcity", "Madani et al.: semi-supervised GAN vs matched CNN as labels get scarce (Table 1)",
         flags=_sgan_scarcity_flags)
def _sgan_scarcity(args: argparse.Namespace) -> None:
    from cxrgan.recipes.sgan_scarcity import CPU_SGAN, FULL_SGAN, SganScarcityConfig, run_sgan_scarcity

    config = SganScarcityConfig(data=args.data, per_class=tuple(int(n) for n in args.per_class.split(",") if n.strip()),
                                seeds=args.seeds, first_seed=args.first_seed, full=args.full,
                                sgan=_sgan_config(args, CPU_SGAN, FULL_SGAN))
    if args.dry_run:
        from cxrgan.recipes.sgan_scarcity import plan_sgan_scarcity
        from cxrgan.report.tables import to_markdown

        print(json.dumps(asdict(config), indent=2, default=str) + "\n\n" + to_markdown(plan_sgan_scarcity(config)))
        return
    run_sgan_scarcity(config, args.out, resume_dir=args.resume, command=shell_command())


def _sgan_domain_flags(parser: argparse.ArgumentParser) -> None:
    from cxrgan.recipes.sgan_domain import DEFAULT_DATA, DEFAULT_SECOND_DATA

    parser.add_argument("--data", default=DEFAULT_DATA, help="dataset 1, labelled (default %(default)s)")
    parser.add_argument("--second-data", default=DEFAULT_SECOND_DATA, metavar="FILE",
                        help="dataset 2: train split unlabelled, test split evaluates (default %(default)s)")
    _sgan_flags(parser, default_seeds=5)


@command("recipe sgan-domain", "Madani et al.: SGAN with unlabelled data of a second source (Table 2)",
         flags=_sgan_domain_flags)
def _sgan_domain(args: argparse.Namespace) -> None:
    from cxrgan.recipes.sgan_domain import CPU_SGAN, FULL_SGAN, SganDomainConfig, run_sgan_domain

    config = SganDomainConfig(data=args.data, second_data=args.second_data, seeds=args.seeds,
                              first_seed=args.first_seed, full=args.full, sgan=_sgan_config(args, CPU_SGAN, FULL_SGAN))
    if args.dry_run:
        from cxrgan.recipes.sgan_domain import plan_sgan_domain
        from cxrgan.report.tables import to_markdown

        print(json.dumps(asdict(config), indent=2, default=str) + "\n\n" + to_markdown(plan_sgan_domain(config)))
        return
    run_sgan_domain(config, args.out, resume_dir=args.resume, command=shell_command())
