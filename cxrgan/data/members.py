"""The arrays of an .npz file as its members' ``.npy`` headers claim them, read before any array data: a file whose
members cannot be plain arrays of the sizes they claim is refused before anything is decompressed or mapped.

A compressed member can claim any size (18 MB of zeros inflate to 4 GB), and an uncompressed one can claim more rows
than the file stores; numpy finds out only while reading the data, after allocating it. Here each member's
header (``numpy.lib.format``) is read first: object (pickled) arrays are refused, a stored member must hold exactly
the bytes its header claims, and the members of a compressed file together may claim at most
:data:`MAX_INFLATION` times the file's size (or :data:`INFLATION_FLOOR`, whichever is larger).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrgan.errors import CxrganError
from cxrgan.io import zip_data_offset

# Real radiographs deflate to 70-90 % of their size and a compact file's label and id arrays to a few per cent
# (measured on ../shared/data: every file's members claim 1.1-1.3 times its size); 64 leaves room for blank or
# synthetic images and refuses the 18 MB file claiming 4 GB (220 times).
MAX_INFLATION = 64
INFLATION_FLOOR = 256 << 20  # a small file may always claim this much (its label arrays compress very well)
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


@dataclass(frozen=True)
class Member:
    """One array of an .npz file, from its header alone."""

    name: str  # the array's key ("images" for images.npy)
    shape: tuple[int, ...]  # shape its header claims
    dtype: np.dtype  # dtype its header claims (never an object dtype)
    fortran_order: bool  # column-major data
    data_offset: int | None  # offset of the array data in the file when stored uncompressed, else None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def memmap(self, path: str | os.PathLike) -> np.memmap | None:
        """The array mapped read-only from the file; None for a compressed member."""
        if self.data_offset is None:
            return None
        if self.nbytes == 0:
            return None
        return np.memmap(path, dtype=self.dtype, mode="r", offset=self.data_offset, shape=self.shape,
                         order="F" if self.fortran_order else "C")


def read_members(path: str | os.PathLike) -> dict[str, Member]:
    """Every array of the .npz ``path`` by name, checked as the module docstring says, without reading array data."""
    path = Path(path)
    if path.is_dir():
        raise CxrganError(f"{path}: is a folder, not an .npz file")
    if not path.exists():
        raise CxrganError(f"{path}: no such file")
    file_size = path.stat().st_size
    members: dict[str, Member] = {}
    inflated = 0
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                if not info.filename.endswith(".npy"):
                    raise CxrganError(f"{path}: member {info.filename!r} is not an .npy array; not a numpy .npz file")
                member = _read_member(path, f, archive, info)
                members[member.name] = member
                if info.compress_type != zipfile.ZIP_STORED:
                    inflated += info.file_size
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise CxrganError(f"{path}: not a readable .npz file ({exc})") from None
    limit = max(MAX_INFLATION * file_size, INFLATION_FLOOR)
    if inflated > limit:
        raise CxrganError(f"{path}: its compressed arrays claim {_size(inflated)} from a {_size(file_size)} file "
                          f"(more than {MAX_INFLATION} times its size); refused before decompressing. A genuine file "
                          "can be saved uncompressed (numpy.savez) and is then memory-mapped")
    return members


def _read_member(path: Path, f, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
    name = info.filename[:-len(".npy")]
    where = f"{path}: array {name!r}"
    try:
        with archive.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            reader = _HEADER_READERS.get(version, np.lib.format.read_array_header_2_0)
            shape, fortran_order, dtype = reader(stream, max_header_size=100_000)
            header_bytes = stream.tell()
    except (ValueError, SyntaxError, EOFError) as exc:
        raise CxrganError(f"{where}: not a readable .npy header ({exc})") from None
    if dtype.hasobject:
        raise CxrganError(f"{where}: holds Python objects ({dtype}), which would need unpickling; cxrgan reads "
                          "plain numeric and text arrays only")
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise CxrganError(f"{where}: invalid shape {shape}")
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize  # exact: a hostile shape may overflow int64
    if header_bytes + claimed != info.file_size:
        raise CxrganError(f"{where}: its header claims shape {shape} {dtype} ({_size(claimed)}) but the file stores "
                          f"{_size(max(0, info.file_size - header_bytes))} for it (truncated or damaged)")
    offset = None
    if info.compress_type == zipfile.ZIP_STORED:
        offset = zip_data_offset(f, info) + header_bytes
    return Member(name, tuple(shape), dtype, bool(fortran_order), offset)


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"


def is_text(member: Member) -> bool:
    return member.dtype.kind in "US"


def is_numeric(member: Member) -> bool:
    return member.dtype.kind in "biuf"
