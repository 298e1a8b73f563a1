"""Generator commands: ``cxrgan train-gan``, ``sample``, ``generators list``, ``audit``, and ``cam`` panels of a run's
classifiers on real or synthetic images."""

from __future__ import annotations

import argparse

from cxrgan.cli.flags import command


# ---- generators ----------------------------------------------------------------------------------------------
def _methods_help() -> str:
    from cxrgan.generators import GENERATORS

    return "methods:\n" + "\n".join(f"  {name:<15} {cls.summary}" for name, cls in sorted(GENERATORS.items()))


def _train_gan_flags(parser: argparse.ArgumentParser) -> None:
    from cxrgan.generators import GENERATORS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _methods_help() + "\n\nUnset settings come from the method's CPU preset (--full: paper sizes)."
    parser.add_argument("--method", required=True, choices=sorted(GENERATORS), metavar="METHOD",
                        help="registered generator (see the list below)")
    parser.add_argument("--data", required=True, help="compact .npz; only its train split is used")
    parser.add_argument("--out", default="runs", help="folder for numbered run directories")
    parser.add_argument("--task", default=None, choices=["labels", "findings"],
                        help="the file's binary labels or multi-label findings (default: the method's own)")
    parser.add_argument("--target", default=None,
                        help="one-class methods (dcgan, fastgan, ldm): the class or finding it models (default positive)")
    parser.add_argument("--gan-steps", type=int, default=None, help="optimisation steps")
    parser.add_argument("--gan-width", type=int, default=None, help="network widths ngf = ndf (latent diffusion: UNet)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--ngf", type=int, default=None, help="generator width")
    parser.add_argument("--ndf", type=int, default=None, help="discriminator width")
    parser.add_argument("--d-norm", default=None, choices=["batch", "spectral", "none"], help="DCGAN family")
    parser.add_argument("--loss", default=None, choices=["bce", "hinge"], help="DCGAN family")
    parser.add_argument("--diffaugment", default=None, help='DiffAugment ops, e.g. "translation,cutout" ("" = off)')
    parser.add_argument("--ema-decay", type=float, default=None, help="EMA of generator weights (0 = off)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="cldm, ldm-labelvec: classifier-free guidance scale w of sampling (1 = conditional only)")
    parser.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast")
    parser.add_argument("--quality-every", type=int, default=None,
                        help="steps between fidelity scores that pick best.pt (0 = off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="paper-size preset (for GPUs)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                        help="continue the latest run of --method in --out, or RUN_DIR")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-sync-bn", action="store_true",
                        help="under torchrun, BatchNorm statistics per process instead of over the global batch")
    parser.add_argument("--no-progress", action="store_true")


@command("train-gan", "train a registered generator on the training split of a compact .npz file",
         flags=_train_gan_flags)
def _train_gan(args: argparse.Namespace) -> None:
    from cxrgan.device import bf16_supported, resolve_device
    from cxrgan.errors import CxrganError
    from cxrgan.generators import GeneratorSettings, generator_class, train_gan

    device = resolve_device(args.device)
    if args.bf16 and not bf16_supported(device):
        raise CxrganError(f"--bf16: {device} does not run bf16 natively (a CUDA GPU needs compute capability 8.0, a CPU "
                          "AVX512-BF16 or AMX); leave it off to train in fp32")
    cls = generator_class(args.method)
    fields = {"batch_size": args.batch_size, "ngf": args.ngf, "ndf": args.ndf, "d_norm": args.d_norm, "loss": args.loss,
              "diffaugment": args.diffaugment, "ema_decay": args.ema_decay, "bf16": args.bf16,
              "quality_every": args.quality_every, "target": args.target, "guidance_scale": args.guidance_scale}
    fixed = {"seed": args.seed, **({"progress": False} if args.no_progress else {}),
             **({"sync_batchnorm": False} if args.no_sync_bn else {})}
    fixed.update({k: v for k, v in fields.items() if v is not None})
    config = cls.resolve_config(GeneratorSettings(args.gan_steps, args.gan_width, args.full), **fixed)
    run_dir = train_gan(args.method, args.data, args.out, config, device=device,
                        resume=args.resume, npz_target=args.task)
    print(f"trained {args.method}: {run_dir}")


def _sample_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory written by cxrgan train-gan (or a cached generator)")
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument("--label", default=None, help="class or finding to sample (default: the model's own)")
    parser.add_argument("--out", required=True, help="output .png (grid) or .npz (compact dataset)")
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"],
                        help="best.pt (best fidelity score, when kept) or the last state (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")


@command("sample", "draw images from a trained generator run", flags=_sample_flags)
def _sample(args: argparse.Namespace) -> None:
    from cxrgan.device import resolve_device
    from cxrgan.generators import sample_from_run

    path = sample_from_run(args.run_dir, args.n, args.label, args.out, seed=args.seed,
                           device=resolve_device(args.device), checkpoint=args.checkpoint)
    print(f"wrote {path}")


def _generators_list_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a generator cache, a compare / recipe run, or a train-gan output folder")


@command("generators list", "list the trained generators under DIR: method, steps, quality, config, audit",
         flags=_generators_list_flags)
def _generators_list(args: argparse.Namespace) -> None:
    import pandas as pd

    from cxrgan.generators import cache_entries
    from cxrgan.report.tables import to_markdown

    rows = cache_entries(args.dir)
    print(to_markdown(pd.DataFrame(rows)) if rows else f"{args.dir}: no trained generator (no checkpoint.pt) found")


# ---- explain, audit --------------------------------------------------------------------------------------------
def _cam_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a compare or recipe run directory (its models/ are used)")
    parser.add_argument("--images", nargs="+", required=True, help=".npz data or samples, or PNG/JPEG/DICOM files")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--methods", default=None, help="comma-separated methods to show (default: all saved)")
    parser.add_argument("--method", default="gradcam", choices=["gradcam", "cam"])
    parser.add_argument("--n", type=int, default=4, help="images per .npz source")
    parser.add_argument("--split", default="test", help="split to draw from .npz data files")
    parser.add_argument("--target", type=int, default=0, help="output column to explain")


@command("cam", "CAM / Grad-CAM panels of a run's models on real or synthetic images", flags=_cam_flags)
def _cam(args: argparse.Namespace) -> None:
    from cxrgan.evaluate.cam import cam_command

    methods = args.methods.split(",") if args.methods else None
    print(f"wrote {cam_command(args.run_dir, args.images, args.out, methods, args.method, args.n, args.split, args.target)}")


def _audit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", nargs="?", default=None,
                        help="a generator run directory (cxrgan train-gan, or a cached generator of a run)")
    parser.add_argument("--images", default=None, metavar="FILE",
                        help="audit a synthetic file made elsewhere instead (an .npz in the data format or a folder of "
                             "class folders); needs --data")
    parser.add_argument("--data", default=None, help="the real .npz (default: the data the GAN was trained on)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/audit; none for --images)")
    parser.add_argument("--n", type=int, default=None, help="synthetic images to audit (default: as many as test)")
    parser.add_argument("--feature-model", default="small-cnn", help="classifier that embeds images")
    parser.add_argument("--feature-epochs", type=int, default=5)
    parser.add_argument("--no-tstr", action="store_true", help="skip the train-on-synthetic / test-on-real AUC")
    parser.add_argument("--json", action="store_true", help="print the audit as one JSON object on stdout")
    parser.add_argument("--device", default="auto")


@command("audit", "fidelity, diversity, memorisation and leakage audit of a trained generator or a synthetic file",
         flags=_audit_flags)
def _audit(args: argparse.Namespace) -> None:
    import json

    from cxrgan.device import resolve_device
    from cxrgan.errors import CxrganError
    from cxrgan.evaluate.audit import AuditConfig, audit_table
    from cxrgan.evaluate.generator_audit import audit_run
    from cxrgan.evaluate.synthetic_audit import audit_file, leakage_table, summary
    from cxrgan.report.tables import to_markdown

    if (args.run_dir is None) == (args.images is None):
        raise CxrganError("audit: give a generator RUN_DIR or --images FILE (not both)")
    config = AuditConfig(feature_model=args.feature_model, feature_epochs=args.feature_epochs,
                         device=str(resolve_device(args.device)), tstr=not args.no_tstr)
    if args.images is not None:
        if args.data is None:
            raise CxrganError(f"--images {args.images}: name the real data it imitates with --data FILE")
        result = audit_file(args.images, args.data, args.out, config)
    else:
        result = audit_run(args.run_dir, args.data, args.out, args.n, config)
    if args.json:
        print(json.dumps(summary(result), sort_keys=True))
        return
    print(to_markdown(audit_table(result)))
    if result.get("tstr", {}).get("skipped"):
        print(f"\ntrain on synthetic, test on real: skipped ({result['tstr']['skipped']})")
    if "near_duplicates" in result:
        print("\n" + to_markdown(leakage_table(result)))
