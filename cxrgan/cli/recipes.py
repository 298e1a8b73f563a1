"""``cxrgan recipe NAME``: one command per published method; each turns its flags into the recipe's config and hands
it to the run engine."""

from __future__ import annotations

import argparse
import dataclasses

from cxrgan.cli.flags import (COMMANDS, KERMANY_SITE_NOTE, add_checkpoint_flags, add_external_flags,
                              add_generator_flags, add_run_flags, add_synthetic_flags, classifier, command,
                              generator_settings, method_list, parse_ratio, run, run_spec, synthetic_files)
from cxrgan.recipes import default_external


# ---- binary recipes on the compare engine ------------------------------------------------------------------------
def _paper_compare_flags(parser: argparse.ArgumentParser, methods: tuple[str, ...], imbalance_help: str,
                         full_help: str, generator: str) -> None:
    """The flags of a paper recipe that contains a comparison: its rows, imbalance, epochs, sites, generators, run."""
    parser.add_argument("--methods", default=",".join(methods), help="rows of the table; the first is the baseline")
    parser.add_argument("--imbalance", type=parse_ratio, default=(3, 1), metavar="NEG:POS", help=imbalance_help)
    parser.add_argument("--epochs", type=int, default=None, help="classifier epochs (default: CPU 8, --full 30)")
    parser.add_argument("--full", action="store_true", help=full_help)
    add_external_flags(parser, default_note=KERMANY_SITE_NOTE)
    add_synthetic_flags(parser)
    add_generator_flags(parser, generator=generator)
    add_run_flags(parser, default_seeds=3)
    add_checkpoint_flags(parser.add_argument_group("classifier checkpoints"))


def _paper_compare(args: argparse.Namespace, data: str, sites: tuple[str, ...], cpu, full, **fields):
    """The ``CompareConfig`` a paper recipe contains, from the flags of :func:`_paper_compare_flags`."""
    from cxrgan.recipes.compare import CompareConfig

    methods = method_list(args.methods)
    return CompareConfig(run=run_spec(args, data, sites), methods=methods, baseline=methods[0] if methods else "none",
                         imbalance=args.imbalance, train=classifier(args, cpu, full),
                         generators=generator_settings(args), synthetic=synthetic_files(args), **fields)


def _dcgan_alpha_flags(parser: argparse.ArgumentParser) -> None:
    from cxrgan.recipes.dcgan_alpha import METHODS

    parser.add_argument("--data", required=True, help="Kermany-style binary .npz (normal / pneumonia)")
    parser.add_argument("--tstr-images", type=int, default=1000, help="synthetic images per class for TSTR AUC")
    _paper_compare_flags(parser, METHODS, "normal:pneumonia ratio of the training split (default 3:1, as the paper)",
                         "paper-size GANs and ResNet-18 training (GPU)", "dcgan")


@command("recipe dcgan-alpha", "Sun & Li: DCGAN / cDCGAN(alpha) vs classic fixes, ResNet-18",
         flags=_dcgan_alpha_flags)
def _dcgan_alpha(args: argparse.Namespace) -> None:
    from cxrgan.recipes.dcgan_alpha import CPU_CLASSIFIER, FULL_CLASSIFIER, DcganAlpha, DcganAlphaConfig

    compare = _paper_compare(args, args.data, default_external(args.data), CPU_CLASSIFIER, FULL_CLASSIFIER)
    run(DcganAlpha(DcganAlphaConfig(compare=compare, tstr_images=args.tstr_images)), args)


def _cyclegan_complement_flags(parser: argparse.ArgumentParser) -> None:
    from cxrgan.recipes.cyclegan_complement import METHODS, SETTINGS

    parser.add_argument("--setting", default="kermany", choices=list(SETTINGS),
                        help="kermany (default): Kermany data, NIH subset as CycleGAN extra data, NIH pneumonia as "
                             "external site; paper: Malygina et al.'s NIH pneumonia data with Kermany as extra data")
    parser.add_argument("--data", default=None, help="binary .npz, normal / pneumonia (default: the setting's)")
    parser.add_argument("--gan-extra-data", default=None, metavar="FILE",
                        help="binary .npz whose training split joins the CycleGAN's domains only (default: the "
                             "setting's)")
    parser.add_argument("--fidelity-images", type=int, default=200, help="test images per class for translation fidelity")
    _paper_compare_flags(parser, METHODS, "normal:pneumonia ratio of the training split (default 3:1, pneumonia the "
                         "minority)", "DenseNet-121 and the paper's CycleGAN sizes (GPU)", "cyclegan")


@command("recipe cyclegan-complement", "Malygina et al.: CycleGAN complement oversampling (+ extra data) vs none",
         flags=_cyclegan_complement_flags)
def _cyclegan_complement(args: argparse.Namespace) -> None:
    from cxrgan.recipes.cyclegan_complement import (CPU_CLASSIFIER, FULL_CLASSIFIER, SETTINGS, CycleganComplement,
                                                    CycleganComplementConfig)

    data, extra, _ = SETTINGS[args.setting]
    data, extra = args.data or data, args.gan_extra_data or extra
    # the paper setting's extra data is Kermany: no Kermany-based site stays external there
    sites = default_external(data) if args.setting == "kermany" else ()
    compare = _paper_compare(args, data, sites, CPU_CLASSIFIER, FULL_CLASSIFIER, extra_data=extra)
    config = CycleganComplementConfig(compare=compare, setting=args.setting, fidelity_images=args.fidelity_images)
    run(CycleganComplement(config), args)


# ---- multi-label recipes -------------------------------------------------------------------------------------------
def _multilabel_recipe_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", action="append", default=None,
                        help="findings .npz (repeatable: files with the same findings and other patients are joined), "
                             "or one CheXpert / NIH CSV or folder (default: NIH ChestX-ray14 subset + nih_pneumonia)")
    parser.add_argument("--findings", default="", help="comma-separated findings to augment (default: the rarest)")
    parser.add_argument("--n-findings", type=int, default=3, help="how many rare findings to choose")
    parser.add_argument("--min-positives", type=int, default=16, help="floor on a chosen finding's training positives")
    parser.add_argument("--size", type=int, default=64, help="image side when decoding a CSV source")
    parser.add_argument("--epochs", type=int, default=None, help="classifier epochs (default: CPU 12, --full 30)")
    parser.add_argument("--full", action="store_true", help="paper-size GANs and DenseNet-121 training (GPU)")
    add_synthetic_flags(parser)
    add_generator_flags(parser)
    add_run_flags(parser, default_seeds=5)
    add_checkpoint_flags(parser.add_argument_group("classifier checkpoints"))


def _multilabel_common(args: argparse.Namespace) -> dict:
    from cxrgan.recipes.cgan_regimes import CPU_CLASSIFIER, DEFAULT_DATA, FULL_CLASSIFIER

    return dict(run=run_spec(args, tuple(args.data) if args.data else DEFAULT_DATA),
                findings=method_list(args.findings), n_findings=args.n_findings, min_positives=args.min_positives,
                size=args.size, train=classifier(args, CPU_CLASSIFIER, FULL_CLASSIFIER),
                generators=generator_settings(args), synthetic=synthetic_files(args))


def _cgan_regimes_flags(parser: argparse.ArgumentParser) -> None:
    from cxrgan.recipes.cgan_regimes import GAN_DATA

    _multilabel_recipe_flags(parser)
    parser.add_argument("--regimes", default="0.01,0.1,0.5,1", help="nested training shares (default %(default)s)")
    parser.add_argument("--methods", default="none,flip,gan,copies,ml-ros,ldam-drw",
                        help="rows: none, flip, gan, copies (the GAN's count-matched control: its label vectors with "
                             "real images) or any method name (default %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.15, help="share each augmented finding must reach")
    parser.add_argument("--uncertainty", default="ones", choices=["zeros", "ones", "ignore"],
                        help="U-policy of the training labels (test labels are policy-free; default %(default)s)")
    parser.add_argument("--gan-data", default="full", choices=GAN_DATA,
                        help="train the GAN on the full training split (as the paper) or on each regime's rows")


@command("recipe cgan-regimes", "Sundaram & Hulkund: none / flip / label-vector cGAN across 1-100%% data regimes",
         flags=_cgan_regimes_flags)
def _cgan_regimes(args: argparse.Namespace) -> None:
    from cxrgan.recipes.cgan_regimes import CganRegimes, CganRegimesConfig
    from cxrgan.errors import CxrganError

    try:
        regimes = tuple(float(r) for r in args.regimes.split(","))
    except ValueError:
        raise CxrganError(f"--regimes {args.regimes!r}: expected comma-separated shares such as 0.1,0.5,1") from None
    config = CganRegimesConfig(regimes=regimes, methods=method_list(args.methods), threshold=args.threshold,
                               uncertainty=args.uncertainty, gan_data=args.gan_data, **_multilabel_common(args))
    run(CganRegimes(config), args)


def _dcgan_rare_flags(parser: argparse.ArgumentParser) -> None:
    _multilabel_recipe_flags(parser)
    parser.add_argument("--policy", default="zeros", choices=["zeros", "ones", "ignore"],
                        help="training-label policy of the GAN comparison (default %(default)s, as the paper)")
    parser.add_argument("--ratio", type=float, default=1.0, help="add images until positives = ratio x negatives")
    parser.add_argument("--cheap-fixes", default="ml-ros,ldam-drw",
                        help="non-generative methods run beside the DCGAN under the same policy (default %(default)s)")


@command("recipe dcgan-rare-findings", "Venugopal Sunitha: U-policy baselines, one DCGAN per rare finding",
         flags=_dcgan_rare_flags)
def _dcgan_rare_findings(args: argparse.Namespace) -> None:
    from cxrgan.recipes.dcgan_rare_findings import DcganRareConfig, DcganRareFindings

    run(DcganRareFindings(DcganRareConfig(policy=args.policy, ratio=args.ratio, cheap_fixes=method_list(args.cheap_fixes),
                                          **_multilabel_common(args))), args)


# ---- semi-supervised GAN recipes ---------------------------------------------------------------------------------
def _sgan_flags(parser: argparse.ArgumentParser, default_seeds: int) -> None:
    parser.add_argument("--gan-steps", type=int, default=None,
                        help="SGAN steps, and as many for its matched CNN (default: the recipe's CPU budget)")
    parser.add_argument("--norm", default=None, choices=["virtual", "batch"], help="discriminator normalisation")
    parser.add_argument("--generator-loss", default=None, choices=["feature-matching", "plain"])
    parser.add_argument("--full", action="store_true", help="paper-size SGAN (width 64, 6000 steps, batch 64; GPU)")
    add_run_flags(parser, default_seeds=default_seeds)


def _sgan_config(args: argparse.Namespace, cpu, full):
    overrides = {k: v for k, v in (("steps", args.gan_steps), ("norm", args.norm),
                                   ("generator_loss", args.generator_loss)) if v is not None}
    return dataclasses.replace(full if args.full else cpu, device=args.device, **overrides)


def _sgan_scarcity_flags(parser: argparse.ArgumentParser) -> None:
    from cxrgan.recipes.sgan_scarcity import DEFAULT_DATA, PER_CLASS

    parser.add_argument("--data", default=DEFAULT_DATA, help="binary .npz, normal / abnormal (default %(default)s)")
    parser.add_argument("--per-class", default=",".join(map(str, PER_CLASS)),
                        help="labelled images per class (default %(default)s)")
    add_external_flags(parser, default_note=KERMANY_SITE_NOTE)
    _sgan_flags(parser, default_seeds=3)


@command("recipe sgan-scarcity", "Madani et al.: semi-supervised GAN vs matched CNN as labels get scarce (Table 1)",
         flags=_sgan_scarcity_flags)
def _sgan_scarcity(args: argparse.Namespace) -> None:
    from cxrgan.errors import CxrganError
    from cxrgan.recipes.sgan_scarcity import CPU_SGAN, FULL_SGAN, SganScarcity, SganScarcityConfig

    try:
        per_class = tuple(int(n) for n in args.per_class.split(",") if n.strip())
    except ValueError:
        raise CxrganError(f"--per-class {args.per_class!r}: expected comma-separated counts such as 10,100") from None
    config = SganScarcityConfig(run=run_spec(args, args.data, default_external(args.data)), per_class=per_class,
                                full=args.full, sgan=_sgan_config(args, CPU_SGAN, FULL_SGAN))
    run(SganScarcity(config), args)


def _sgan_domain_flags(parser: argparse.ArgumentParser) -> None:
    from cxrgan.recipes.sgan_domain import DEFAULT_DATA, DEFAULT_SECOND_DATA

    parser.add_argument("--data", default=DEFAULT_DATA, help="dataset 1, labelled (default %(default)s)")
    parser.add_argument("--second-data", default=DEFAULT_SECOND_DATA, metavar="FILE",
                        help="dataset 2: train split unlabelled, test split evaluates (default %(default)s)")
    _sgan_flags(parser, default_seeds=5)


@command("recipe sgan-domain", "Madani et al.: SGAN with unlabelled data of a second source (Table 2)",
         flags=_sgan_domain_flags)
def _sgan_domain(args: argparse.Namespace) -> None:
    from cxrgan.recipes.sgan_domain import CPU_SGAN, FULL_SGAN, SganDomain, SganDomainConfig

    config = SganDomainConfig(run=run_spec(args, args.data), second_data=args.second_data, full=args.full,
                              sgan=_sgan_config(args, CPU_SGAN, FULL_SGAN))
    run(SganDomain(config), args)


# ---- the map over the minority's size ----------------------------------------------------------------------------
def _helps_map_flags(parser: argparse.ArgumentParser) -> None:
    from cxrgan.generators import generator_class
    from cxrgan.recipes import KERMANY_64
    from cxrgan.recipes.helps_map_config import (METHODS, MINORITY, QUICK_EPOCHS, QUICK_METHODS, QUICK_MINORITY,
                                                 QUICK_SEEDS, SEEDS, GeneratorBudget)

    budget = GeneratorBudget()
    parser.add_argument("--data", default=KERMANY_64, help="binary .npz, normal / abnormal; the abnormal (positive) "
                                                          "class is cut to each minority count (default %(default)s)")
    parser.add_argument("--minority", default=None, metavar="N,N,...",
                        help=f"minority training images per point, nested per seed and grouped by patient (default "
                             f"{','.join(map(str, MINORITY))}, those up to the class's training rows; --quick "
                             f"{','.join(map(str, QUICK_MINORITY))}); a generator needs at least 16")
    parser.add_argument("--majority", type=int, default=None, metavar="N",
                        help="majority (normal) training images, fixed at every point (default: those of compare's "
                             "3:1 subset, 1,206 on Kermany)")
    parser.add_argument("--methods", default=None,
                        help=f"methods at every point, none first (default {','.join(METHODS)}; --quick "
                             f"{','.join(QUICK_METHODS)}); cldm-a0.5 and synth-pretrain (one latent diffusion model "
                             "per point and seed, shared by both) add more time than the default map takes")
    parser.add_argument("--generator-seeds", type=int, default=None, metavar="K",
                        help="distinct minority draws and generators per point, shared by the classifier seeds in "
                             "turn (default: one per seed; 1 = one generator per point, verdicts conditional on it)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a first look: minority {','.join(map(str, QUICK_MINORITY))}, methods "
                             f"{','.join(QUICK_METHODS)}, {QUICK_SEEDS} seeds, {QUICK_EPOCHS} epochs (flags given "
                             "explicitly win); on an idle 2-core CPU about 25-30 minutes, the default map about 2-2.5 "
                             "hours (the dry run's estimator with measured idle speeds; --dry-run measures this "
                             "machine)")
    group = parser.add_argument_group("classifier")
    group.add_argument("--model", default="resnet18", help="resnet18, densenet121 or small-cnn (default %(default)s)")
    group.add_argument("--epochs", type=int, default=None,
                       help=f"classifier epochs (default: CPU 8, --quick {QUICK_EPOCHS}, --full 30)")
    group.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                       help="autocast precision; auto (default) = bf16 where the device runs it natively")
    add_checkpoint_flags(group)
    parser.add_argument("--full", action="store_true", help="paper-size generators and ResNet-18 training (GPU)")
    add_external_flags(parser, default_note=KERMANY_SITE_NOTE)
    add_generator_flags(parser, generator="fastgan")
    presets = ", ".join(f"{name} {generator_class(name).cpu_preset['steps']:,}" for name in ("fastgan", "cldm"))
    parser.add_argument_group("generator budgets").description = (
        f"Without --gan-steps a generator trains its CPU preset's steps ({presets}) x clip(1 + "
        f"{budget.per_halving:g} log2(minority / {budget.reference_rows}), {budget.floor:g}, 1), as few images need "
        "fewer steps (FastGAN's quality curves on 25 and 100 images): "
        + ", ".join(f"{n} images {budget.steps(100, n)} %" for n in MINORITY)
        + " of the preset. --gan-steps N trains N steps at every point.")
    add_run_flags(parser, default_seeds=None,
                  seeds_help=f"classifier seeds per point (default {SEEDS}; --quick {QUICK_SEEDS})")


@command("recipe helps-map", "where does generative rebalancing help? Every method against none and duplication "
         "over the minority class's size", flags=_helps_map_flags)
def _helps_map(args: argparse.Namespace) -> None:
    from cxrgan.device import resolve_amp
    from cxrgan.errors import CxrganError
    from cxrgan.recipes.dcgan_alpha import CPU_CLASSIFIER, FULL_CLASSIFIER
    from cxrgan.recipes.helps_map import HelpsMap
    from cxrgan.recipes.helps_map_config import (METHODS, QUICK_EPOCHS, QUICK_METHODS, QUICK_MINORITY, QUICK_SEEDS, SEEDS,
                                                 map_config)

    try:
        minority = tuple(int(n) for n in args.minority.split(",") if n.strip()) if args.minority else None
    except ValueError:
        raise CxrganError(f"--minority {args.minority!r}: expected comma-separated counts such as 25,100") from None
    if args.quick and args.epochs is None:
        args.epochs = QUICK_EPOCHS
    if args.seeds is None:
        args.seeds = QUICK_SEEDS if args.quick else SEEDS
    amp = resolve_amp(args.precision, args.device)
    train = dataclasses.replace(classifier(args, CPU_CLASSIFIER, FULL_CLASSIFIER), model=args.model,
                                bf16=amp == "bf16", fp16=amp == "fp16")
    methods = method_list(args.methods) if args.methods else (QUICK_METHODS if args.quick else METHODS)
    config = map_config(run_spec(args, args.data, default_external(args.data)), methods, train,
                        generator_settings(args), minority=minority or (QUICK_MINORITY if args.quick else None),
                        majority=args.majority, generator_seeds=args.generator_seeds)
    run(HelpsMap(config), args)


# ---- every other registered recipe: the run flags, the rest of its config at its defaults -----------------------
def _generic_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", action="append", required=True, help="data file (repeatable when the recipe joins files)")
    add_run_flags(parser, default_seeds=5)


def _generic_command(kind: str):
    def start(args: argparse.Namespace) -> None:
        from cxrgan.engine import RECIPES

        cls = RECIPES[kind]
        run(cls(cls.config_class(run=run_spec(args, tuple(args.data)))), args)

    return start


def register_generic_recipes() -> None:
    """``cxrgan recipe KIND`` for every registered recipe without a command of its own whose config holds a ``run``
    (``RunSpec``): the shared run flags build it, its other settings keep their defaults. A new recipe is then one
    file and its line in ``cxrgan.recipes.all``; a command of its own here gives it more flags."""
    import cxrgan.recipes.all  # noqa: F401  (every recipe registers itself)
    from cxrgan.engine import RECIPES

    for kind, cls in sorted(RECIPES.items()):
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        if f"recipe {kind}" not in COMMANDS and kind not in COMMANDS and "run" in fields:
            summary = (cls.__doc__ or kind).strip().splitlines()[0]
            command(f"recipe {kind}", summary, flags=_generic_flags)(_generic_command(kind))
