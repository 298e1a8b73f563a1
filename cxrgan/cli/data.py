"""``cxrgan data prepare`` (a dataset layout to the compact .npz format) and ``cxrgan data info`` (its counts)."""

from __future__ import annotations

import argparse

from cxrgan.cli.flags import command


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
