"""Official MedMNIST layout: parsing binary and multi-label files built from real shared data, and the downloader."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request

import numpy as np
import pytest

from _data_helpers import nih_rows
from cxrgan.data import download_medmnist, load_medmnist
from cxrgan.data import medmnist as medmnist_module
from cxrgan.errors import CxrganError


@pytest.fixture(scope="module")
def pneumoniamnist(data_dir):
    with np.load(data_dir / "pneumoniamnist" / "pneumoniamnist_28.npz") as archive:
        return {k: archive[k] for k in ("images", "labels", "split")}


def write_medmnist(path, source, splits=("train", "val", "test")):
    """The official key layout: {split}_images (N,28,28) uint8 and {split}_labels (N,1) uint8."""
    arrays = {}
    for split_name in splits:
        mask = source["split"] == split_name
        arrays[f"{split_name}_images"] = source["images"][mask]
        arrays[f"{split_name}_labels"] = source["labels"][mask].astype(np.uint8)[:, None]
    np.savez_compressed(path, **arrays)
    return path


def test_binary_medmnist_file(tmp_path, pneumoniamnist):
    path = write_medmnist(tmp_path / "pneumoniamnist.npz", pneumoniamnist)
    dataset = load_medmnist(path)
    assert dataset.images.shape == (5856, 28, 28)
    assert dataset.class_names == ("normal", "pneumonia") and dataset.label_names == ("pneumonia",)
    counts = dataset.counts_table().set_index("split")
    # the official PneumoniaMNIST counts
    assert counts.loc["train", "n"] == 4708 and counts.loc["val", "n"] == 524 and counts.loc["test", "n"] == 624
    assert counts.loc["train", "pneumonia+"] == 3494 and counts.loc["test", "pneumonia-"] == 234
    train = dataset.split("train")
    assert np.array_equal(train.images, pneumoniamnist["images"][pneumoniamnist["split"] == "train"])
    named = load_medmnist(path, label_names=("healthy", "sick"))
    assert named.class_names == ("healthy", "sick")


def test_multilabel_chestmnist_file(tmp_path, data_dir):
    rows = nih_rows(data_dir)
    arrays = {}
    for split_name in ("train", "val", "test"):
        mask = rows["split"] == split_name
        arrays[f"{split_name}_images"] = rows["images"][mask]
        arrays[f"{split_name}_labels"] = rows["findings"][mask].astype(np.uint8)
    np.savez(tmp_path / "chestmnist_64.npz", **arrays)
    dataset = load_medmnist(tmp_path / "chestmnist_64.npz")
    assert dataset.n_labels == 14 and dataset.class_names is None
    assert dataset.label_names[0] == "atelectasis" and dataset.label_names[-1] == "hernia"
    assert dataset.positives().sum() == rows["findings"].sum()
    np.savez(tmp_path / "other.npz", **arrays)
    assert load_medmnist(tmp_path / "other.npz").label_names[3] == "label_3"
    with pytest.raises(CxrganError, match="14 columns but 2 names"):
        load_medmnist(tmp_path / "other.npz", label_names=("a", "b"))


def test_bad_medmnist_files(tmp_path, pneumoniamnist):
    np.savez(tmp_path / "noval.npz", train_images=pneumoniamnist["images"][:10])
    with pytest.raises(CxrganError, match="'train_images' has no matching 'train_labels'"):
        load_medmnist(tmp_path / "noval.npz")
    big = np.zeros((4, 64, 64), np.uint8)
    np.savez(tmp_path / "mixed.npz", train_images=pneumoniamnist["images"][:4], train_labels=np.zeros((4, 1)),
             test_images=big, test_labels=np.zeros((4, 1)))
    with pytest.raises(CxrganError, match=r"test images are \(64, 64\), train images \(28, 28\)"):
        load_medmnist(tmp_path / "mixed.npz")
    np.savez(tmp_path / "multiclass.npz", train_images=pneumoniamnist["images"][:4],
             train_labels=np.array([[0], [1], [2], [3]]))
    with pytest.raises(CxrganError, match="values"):
        load_medmnist(tmp_path / "multiclass.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(CxrganError, match="junk.npz: not a readable"):
        load_medmnist(tmp_path / "junk.npz")


def test_download_verifies_md5_and_fails_cleanly_offline(tmp_path, pneumoniamnist, monkeypatch):
    payload_path = write_medmnist(tmp_path / "served.npz", pneumoniamnist)
    payload = payload_path.read_bytes()
    requested = []

    def fake_urlopen(url, timeout):
        requested.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(CxrganError, match="MD5"):
        download_medmnist("pneumoniamnist", 28, root=tmp_path / "cache")
    assert requested == ["https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1"]
    assert not list((tmp_path / "cache").iterdir())  # no partial file left behind
    md5 = {**medmnist_module.MEDMNIST_CHEST["pneumoniamnist"]["md5"], 28: hashlib.md5(payload).hexdigest()}
    monkeypatch.setitem(medmnist_module.MEDMNIST_CHEST["pneumoniamnist"], "md5", md5)
    path = download_medmnist("pneumoniamnist", 28, root=tmp_path / "cache")
    assert path.read_bytes() == payload and len(load_medmnist(path)) == 5856
    download_medmnist("pneumoniamnist", 28, root=tmp_path / "cache")  # cached: no second request
    assert len(requested) == 2

    def offline(url, timeout):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(CxrganError, match="offline.*pneumoniamnist_64.npz"):
        download_medmnist("pneumoniamnist", 64, root=tmp_path / "cache")
    with pytest.raises(CxrganError, match="no 32-pixel"):
        download_medmnist("pneumoniamnist", 32, root=tmp_path)
    with pytest.raises(CxrganError, match="unknown MedMNIST chest flag"):
        download_medmnist("bloodmnist", 28, root=tmp_path)
