"""Builders of small on-disk fixtures (image folders, DICOM, NIH and CheXpert CSV layouts) from real shared images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrgan.data import CXRDataset
from cxrgan.data.chexpert import CHEXPERT_FINDINGS

# NIH finding -> CheXpert observation, to give the CheXpert fixture real (NIH-derived) labels
NIH_TO_CHEXPERT = {
    "Cardiomegaly": "Cardiomegaly", "Edema": "Edema", "Consolidation": "Consolidation", "Pneumonia": "Pneumonia",
    "Atelectasis": "Atelectasis", "Pneumothorax": "Pneumothorax", "Effusion": "Pleural Effusion",
    "Mass": "Lung Lesion", "Nodule": "Lung Lesion", "Infiltration": "Lung Opacity",
}


def class_subset(dataset: CXRDataset, counts: dict[str, tuple[int, int]], column: int = 0, seed: int = 0
                 ) -> CXRDataset:
    """``counts[split]`` = (negatives, positives) real rows of each split of ``dataset``, drawn by label ``column``
    (a finding's for findings data) without replacement, in file order."""
    rng = np.random.default_rng(seed)
    parts = []
    for split, (negatives, positives) in counts.items():
        part = dataset.split(split)
        y = part.labels[:, column]
        rows = np.concatenate([rng.choice(np.flatnonzero(y == 0), negatives, replace=False),
                               rng.choice(np.flatnonzero(y == 1), positives, replace=False)])
        parts.append(part.subset(np.sort(rows)))
    return CXRDataset.concat(parts)


def kermany_rows(data_dir: Path, per_class: int, size: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    """``per_class`` real Kermany images of each class from the official train and test parts."""
    with np.load(data_dir / "kermany_pneumonia" / f"kermany_pneumonia_{size}.npz") as archive:
        arrays = {k: archive[k] for k in ("labels", "filename", "patient_id", "official_split")}
        rng = np.random.default_rng(seed)
        rows = []
        for split_name in ("train", "test"):
            for label in (0, 1):
                pool = np.flatnonzero((arrays["official_split"] == split_name) & (arrays["labels"] == label))
                rows += list(rng.choice(pool, per_class, replace=False))
        rows = np.sort(np.asarray(rows))
        out = {k: v[rows] for k, v in arrays.items()}
        out["images"] = archive["images"][rows]
    return out


def stretch(image: np.ndarray) -> np.ndarray:
    """Min-max to the full 0..255 range (so a DICOM round trip is exact)."""
    low, high = int(image.min()), int(image.max())
    return np.round((image.astype(np.float64) - low) * 255.0 / (high - low)).astype(np.uint8)


def write_dicom(
    path: Path,
    image: np.ndarray,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    patient_id: str = "P0",
) -> Path:
    """Write a uint8 image as a 12-bit CR DICOM; MONOCHROME1 stores it inverted, as such scanners do."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    stored = image.astype(np.uint16) * 16
    if photometric == "MONOCHROME1":
        stored = 4095 - stored
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.Modality = "CR"
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_kermany_folder(root: Path, data_dir: Path, per_class: int = 3, dicom_every: int = 0) -> dict[str, np.ndarray]:
    """``root/{train,test}/{NORMAL,PNEUMONIA}/<original name>`` from real images; JPEG and PNG alternate, and
    every ``dicom_every``-th file is a DICOM. Images are stretched to 0..255 and padded to a non-square shape
    (16 px white bars left and right) so the loader's centre crop recovers them exactly."""
    rows = kermany_rows(data_dir, per_class)
    rows["images"] = np.stack([stretch(im) for im in rows["images"]])
    rows["paths"] = np.empty(len(rows["images"]), dtype=object)
    for i, image in enumerate(rows["images"]):
        padded = np.pad(image, ((0, 0), (16, 16)), constant_values=255)
        folder = root / rows["official_split"][i] / ("PNEUMONIA" if rows["labels"][i] else "NORMAL")
        folder.mkdir(parents=True, exist_ok=True)
        stem = Path(rows["filename"][i]).stem
        if dicom_every and i % dicom_every == dicom_every - 1:
            path = write_dicom(folder / f"{stem}.dcm", padded, photometric="MONOCHROME1")
        elif i % 2:
            path = folder / f"{stem}.png"
            Image.fromarray(padded).save(path)
        else:
            path = folder / f"{stem}.jpeg"
            Image.fromarray(padded).save(path, quality=95)
        rows["paths"][i] = path
    return rows


def nih_rows(data_dir: Path) -> dict[str, np.ndarray]:
    with np.load(data_dir / "nih_chestxray14_subset" / "nih_chestxray14_subset_64.npz") as archive:
        return {k: archive[k] for k in archive.files}


def write_nih_fixture(root: Path, data_dir: Path, n_patients: int = 30) -> pd.DataFrame:
    """``root/Data_Entry_2017.csv`` and ``root/images_001/images/*.png`` for the first ``n_patients`` patients
    of the real NIH subset (its own images and NIH metadata)."""
    rows = nih_rows(data_dir)
    patients = list(dict.fromkeys(rows["patient_id"]))[:n_patients]
    keep = np.flatnonzero(np.isin(rows["patient_id"], patients))
    folder = root / "images_001" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for i in keep:
        Image.fromarray(rows["images"][i]).save(folder / rows["filename"][i])
    table = pd.DataFrame(
        {
            "Image Index": rows["filename"][keep],
            "Finding Labels": rows["finding_labels"][keep],
            "Follow-up #": 0,
            "Patient ID": [int(p) for p in rows["patient_id"][keep]],
            "Patient Age": rows["patient_age"][keep],
            "Patient Gender": rows["patient_gender"][keep],
            "View Position": rows["view_position"][keep],
        }
    )
    table.to_csv(root / "Data_Entry_2017.csv", index=False)
    return table


def write_chexpert_fixture(parent: Path, data_dir: Path, n_train: int = 40, n_valid: int = 10) -> Path:
    """A CheXpert-v1.0-small folder under ``parent`` built from real NIH images with NIH-derived labels.

    Every patient has a frontal image (AP or PA) and every fourth patient also a lateral one; some labels are
    made uncertain (-1) or blank, as in CheXpert's training CSV. Returns the dataset folder.
    """
    rows = nih_rows(data_dir)
    root = parent / "CheXpert-v1.0-small"
    records = {"train": [], "valid": []}
    finding_column = {name: j for j, name in enumerate(rows["finding_names"])}
    for i in range(n_train + n_valid):
        role = "train" if i < n_train else "valid"
        patient = f"patient{i + 1:05d}"
        views = [("Frontal", "PA" if i % 3 else "AP")] + ([("Lateral", "")] if i % 4 == 0 else [])
        for v, (frontal_lateral, ap_pa) in enumerate(views):
            relative = f"CheXpert-v1.0-small/{role}/{patient}/study1/view{v + 1}_{frontal_lateral.lower()}.jpg"
            image_path = parent / relative
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rows["images"][i + v]).save(image_path, quality=95)
            labels = {name: "" for name in CHEXPERT_FINDINGS}
            any_positive = False
            for nih_name, chexpert_name in NIH_TO_CHEXPERT.items():
                if rows["findings"][i, finding_column[nih_name]]:
                    labels[chexpert_name], any_positive = "1.0", True
                elif role == "valid" or (i + len(chexpert_name)) % 3 == 0:
                    labels[chexpert_name] = "0.0"
            labels["No Finding"] = "" if any_positive else "1.0"
            if role == "train" and i % 5 == 1:
                labels["Edema"] = "-1.0"
            if role == "train" and i % 7 == 2:
                labels["Pleural Effusion"] = "-1.0"
            if role == "valid":
                labels = {k: v or "0.0" for k, v in labels.items()}
            records[role].append({"Path": relative, "Sex": "Female" if i % 2 else "Male", "Age": 40 + i,
                                  "Frontal/Lateral": frontal_lateral, "AP/PA": ap_pa, **labels})
    for role, table in records.items():
        pd.DataFrame(table).to_csv(root / f"{role}.csv", index=False)
    return root


# ---- hostile files ------------------------------------------------------------------------------------------------
def write_members(path: Path, arrays: dict[str, np.ndarray], claimed_shapes: dict[str, tuple] | None = None,
                  compress: bool = False) -> str:
    """An .npz written member by member; ``claimed_shapes`` gives a member a header shape other than its data's (a
    header claiming more rows than the file stores)."""
    import zipfile

    claimed_shapes = claimed_shapes or {}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                header = np.lib.format.header_data_from_array_1_0(array)
                header["shape"] = claimed_shapes.get(name, array.shape)
                np.lib.format.write_array_header_1_0(member, header)
                member.write(array.tobytes())
    return str(path)


def write_bomb(path: Path, rows: int) -> str:
    """A compressed compact file whose ``images`` member holds ``rows`` blank 64 x 64 images (labels and splits to
    match): a few hundred KB on disk that inflate to ``rows`` x 4 KB. Written in chunks, never held in memory."""
    import zipfile

    header = {"descr": "|u1", "fortran_order": False, "shape": (rows, 64, 64)}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("images.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            chunk = memoryview(bytes(64 * 64 * 1000))
            for start in range(0, rows, 1000):
                member.write(chunk[:64 * 64 * min(1000, rows - start)])
        arrays = {"labels": np.zeros(rows, np.int8), "label_names": np.array(["normal", "pneumonia"]),
                  "split": np.full(rows, "train")}
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return str(path)


class RunsCode:
    """A pickle payload that would run a shell command when unpickled (cxrgan must refuse it, never run it)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)
