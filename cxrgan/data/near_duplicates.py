"""Near-duplicate images between two sets: a flip-invariant perceptual hash proposes candidates, two correlations
confirm them, and exact pixel copies always count.

A copy of an evaluation image does not stay pixel-identical on its way into a synthetic file or a second site: it
gets mirrored, its intensities shift by a few grey levels, it is re-encoded as JPEG or resized. Three stages catch
these:

1. candidates: the 64-bit DCT perceptual hash (pHash; Zauner 2010, "Implementation and Benchmarking of Perceptual
   Image Hash Functions") of every image, from the maintained ``imagehash`` library, compared with the hashes of
   each reference image *and of its left-right mirror*; pairs within ``CANDIDATE_BITS`` bits are candidates.
   pHash thresholds the lowest DCT frequencies of a 32 x 32 thumbnail at their median, so intensity offsets,
   contrast, JPEG and resampling barely move it (altered copies: at most 8 bits); but every chest X-ray has the
   same low-frequency layout, so on its own it cannot tell two patients apart (about 1 % of the pairs of different
   Kermany patients are candidates);
2. confirmation, for the candidates only (in the orientation that fits best): the Pearson correlation of the two
   32 x 32 area-resized thumbnails must reach ``MIN_LAYOUT`` *and* that of the band-passed thumbnails (minus a
   Gaussian blur of sigma 1 px: ribs, vessels, edges, devices) ``MIN_DETAIL``. Images of different patients
   correlate highly in one of the two at times (the shared lung-field layout; ribs at the same height), in both
   never, in the measurement below; altered copies stay high in both;
3. exact pixel copies always count (a flat image has no detail to correlate).

Thresholds, from ``python benchmarks/near_duplicates.py`` on the real 64 px files. Images of different patients
(every match would be a false positive): Kermany's official test (624) vs train (4,683) split, 2.9 M pairs, and val
vs train, 2.5 M pairs: 0 matches (highest thumbnail correlation 0.972, highest band-pass correlation 0.71); Kermany
train vs train, pairs of different patients, 11.0 M: 0 matches (0.975, 0.808; the one pair above 0.975 / 0.80 is
two children with near-identical films, person1565 / person1637); NIH pneumonia (651) vs all 5,840 Kermany
images: 0 (0.911, 0.566); the NIH ChestX-ray14 subset vs NIH pneumonia: 0 (0.955, 0.768), and vs itself, other
patients: 0 (0.943, 0.840). Altered copies of all 624 Kermany test images looked up among the test images, each
alteration 624 / 624 found: mirrored, +1 / +10 grey levels, contrast x 0.9, gamma 0.8, Gaussian noise (sd 3), JPEG
quality 75 / 50 / 30, resized to 56 / 48 / 32 px and back, mirror + JPEG 75, mirror + 1 + 56 px (lowest thumbnail
correlation 0.984, 32 px round trip; lowest band-pass correlation 0.886, JPEG 30). So ``MIN_LAYOUT`` = 0.98 and
``MIN_DETAIL`` = 0.85 sit between the two groups in both measures, and a false match must exceed the highest
other-patient value in both at once. Not caught: geometric edits such as a 5 % zoom-and-crop (band-pass
correlation down to 0.37), which move every pixel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from cxrgan.data.images import resize_stack
from cxrgan.errors import CxrganError

HASH_SIZE = 8  # pHash side: 8 x 8 = 64 bits
CANDIDATE_BITS = 12  # pHash pairs within this Hamming distance are candidates (altered copies: at most 8)
THUMBNAIL = 32  # side of the thumbnails that are correlated
BANDPASS_SIGMA = 1.0  # Gaussian blur (thumbnail pixels) subtracted to keep the patient-specific detail
MIN_LAYOUT = 0.98  # thumbnail correlation of a near-duplicate (other patients <= 0.975, altered copies >= 0.984)
MIN_DETAIL = 0.85  # band-pass correlation of a near-duplicate (other patients <= 0.84, altered copies >= 0.886)
_CHUNK = 2048  # query and reference images compared per block (bounds memory to a few tens of MB)
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def image_hashes(images: np.ndarray) -> np.ndarray:
    """(N,) hex digest of every image's pixels and shape: equal pixels, equal hash."""
    return np.array([hashlib.sha1(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()
                     for image in images])


@dataclass(frozen=True)
class Fingerprints:
    """What the comparison needs of each image of a set."""

    hashes: np.ndarray  # (N, 2, 8) uint8: the 64-bit pHash of the image and of its left-right mirror
    layout: np.ndarray  # (N, THUMBNAIL**2) float32 unit vectors of the zero-mean thumbnail
    detail: np.ndarray  # (N, THUMBNAIL**2) float32 unit vectors of the zero-mean band-passed thumbnail
    digests: np.ndarray  # (N,) exact pixel hashes (equal pixels and shape, equal digest)

    def __len__(self) -> int:
        return len(self.digests)

    def subset(self, rows: np.ndarray) -> Fingerprints:
        return Fingerprints(self.hashes[rows], self.layout[rows], self.detail[rows], self.digests[rows])


def _unit_rows(values: np.ndarray) -> np.ndarray:
    """Rows made zero-mean and unit-norm (a flat row stays all zeros: it correlates with nothing)."""
    values = values.reshape(len(values), -1)
    values = values - values.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return np.divide(values, norms, out=np.zeros_like(values), where=norms > 1e-6)


def fingerprints(images: np.ndarray) -> Fingerprints:
    """pHash (plain and mirrored), thumbnail, band-passed thumbnail and pixel digest of every (H, W) uint8 image."""
    import imagehash
    from PIL import Image, ImageOps
    from scipy.ndimage import gaussian_filter

    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CxrganError(f"images must be an (N, H, W) uint8 array, got {images.shape} {images.dtype}")
    hashes = np.zeros((len(images), 2, HASH_SIZE * HASH_SIZE // 8), np.uint8)
    for i, image in enumerate(images):
        picture = Image.fromarray(np.ascontiguousarray(image))
        for j, oriented in enumerate((picture, ImageOps.mirror(picture))):
            hashes[i, j] = np.packbits(imagehash.phash(oriented, hash_size=HASH_SIZE).hash.ravel())
    thumbnails = np.zeros((len(images), THUMBNAIL, THUMBNAIL), np.float32)
    if len(images):
        thumbnails = resize_stack(images, THUMBNAIL).astype(np.float32)  # centre square, area resize
    band = thumbnails - gaussian_filter(thumbnails, (0, BANDPASS_SIGMA, BANDPASS_SIGMA), mode="reflect")
    return Fingerprints(hashes, _unit_rows(thumbnails), _unit_rows(band), image_hashes(images))


def mirror_thumbnails(vectors: np.ndarray) -> np.ndarray:
    """The thumbnails of the mirrored images (area resize and the symmetric blur commute with mirroring)."""
    return vectors.reshape(len(vectors), THUMBNAIL, THUMBNAIL)[:, :, ::-1].reshape(len(vectors), -1)


def hash_distances(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """(Q, R) bits between each query's plain hash and the nearer orientation of each reference's hash
    (``Fingerprints.hashes`` arrays)."""
    plain = queries[:, 0]
    distances = [_POPCOUNT[np.bitwise_xor(plain[:, None, :], references[None, :, j, :])].sum(axis=2, dtype=np.int16)
                 for j in (0, 1)]
    return np.minimum(*distances)


def _margin(layout: np.ndarray, detail: np.ndarray) -> np.ndarray:
    """How far a pair clears both thresholds, each scaled to its room below 1; >= 0 for a near-duplicate."""
    return np.minimum((layout - MIN_LAYOUT) / (1 - MIN_LAYOUT), (detail - MIN_DETAIL) / (1 - MIN_DETAIL))


@dataclass(frozen=True)
class Matches:
    """Per query image, its closest candidate among the reference images (the one nearest to both thresholds)."""

    index: np.ndarray  # (Q,) reference row of that candidate; -1 when no reference is a candidate
    layout: np.ndarray  # (Q,) its thumbnail correlation (1.0 for an exact copy); NaN without a candidate
    detail: np.ndarray  # (Q,) its band-pass correlation (1.0 for an exact copy); NaN without a candidate
    mirrored: np.ndarray  # (Q,) whether the match is with the reference's mirror image
    exact: np.ndarray  # (Q,) whether the query's pixels equal those of a reference

    @property
    def duplicate(self) -> np.ndarray:
        """(Q,) bool: an exact copy, or both correlations at or above their thresholds."""
        return self.exact | (np.nan_to_num(_margin(self.layout, self.detail), nan=-1.0) >= 0)

    @property
    def count(self) -> int:
        return int(self.duplicate.sum())

    def first(self) -> int:
        """The first query row that is a near-duplicate (-1 when none is)."""
        rows = np.flatnonzero(self.duplicate)
        return int(rows[0]) if len(rows) else -1


def match(queries: np.ndarray | Fingerprints, references: np.ndarray | Fingerprints,
          groups: tuple[np.ndarray, np.ndarray] | None = None) -> Matches:
    """The closest candidate of every query image among the reference images (see the module docstring).

    Args:
        queries: (Q, H, W) uint8 images, or their ``fingerprints``.
        references: (R, H', W') uint8 images (any size: thumbnails are compared), or their ``fingerprints``.
        groups: (query groups (Q,), reference groups (R,)); pairs of one group are not compared (e.g. images of one
            patient, when measuring how often different patients match).
    """
    q = queries if isinstance(queries, Fingerprints) else fingerprints(queries)
    r = references if isinstance(references, Fingerprints) else fingerprints(references)
    index = np.full(len(q), -1, np.int64)
    best = np.full(len(q), -np.inf)
    layout, detail = np.full(len(q), np.nan), np.full(len(q), np.nan)
    mirrored = np.zeros(len(q), bool)
    for r0 in range(0, len(r), _CHUNK):
        part = r.subset(np.arange(r0, min(r0 + _CHUNK, len(r))))
        oriented = [(part.layout, part.detail), (mirror_thumbnails(part.layout), mirror_thumbnails(part.detail))]
        for q0 in range(0, len(q), _CHUNK):
            near = hash_distances(q.hashes[q0:q0 + _CHUNK], part.hashes) <= CANDIDATE_BITS
            if groups is not None:
                near &= groups[0][q0:q0 + _CHUNK, None] != groups[1][None, r0:r0 + _CHUNK]
            rows, cols = np.nonzero(near)
            if not len(rows):
                continue
            pairs = [(np.einsum("ij,ij->i", q.layout[q0 + rows], lay[cols]),
                      np.einsum("ij,ij->i", q.detail[q0 + rows], det[cols])) for lay, det in oriented]
            margins = np.stack([_margin(*pair) for pair in pairs], axis=1)
            flip = margins.argmax(axis=1)
            margin = margins[np.arange(len(rows)), flip]
            # the best candidate of each query row in this block, kept when it beats those of earlier blocks
            order = np.lexsort((-margin, rows))
            first = order[np.r_[True, rows[order][1:] != rows[order][:-1]]]
            targets = q0 + rows[first]
            better = margin[first] > best[targets]
            targets, first = targets[better], first[better]
            index[targets], best[targets], mirrored[targets] = r0 + cols[first], margin[first], flip[first] == 1
            layout[targets] = np.where(flip[first] == 1, pairs[1][0][first], pairs[0][0][first])
            detail[targets] = np.where(flip[first] == 1, pairs[1][1][first], pairs[0][1][first])
    # an exact copy is a match whatever its thumbnails (a flat image has no detail to correlate)
    exact = np.zeros(len(q), bool)
    where: dict[str, list[int]] = {}
    for i, digest in enumerate(r.digests):
        where.setdefault(digest, []).append(i)
    for row in np.flatnonzero(np.isin(q.digests, r.digests)):
        same = [i for i in where[q.digests[row]] if groups is None or groups[0][row] != groups[1][i]]
        if same:
            exact[row], index[row] = True, same[0]
            layout[row], detail[row], mirrored[row] = 1.0, 1.0, False
    return Matches(index, layout, detail, mirrored, exact)


def check_no_near_duplicates(images: np.ndarray | Fingerprints, references: Mapping[str, np.ndarray | Fingerprints],
                             what: str, why: str) -> None:
    """Refuse ``images`` (described by ``what``, e.g. "--synthetic synth.npz") when any of them is a near-duplicate
    of an image of a reference set (description -> images, e.g. {"the test split of data.npz": ...}); one line
    with the count and the first image. ``why`` ends the message (what the rule protects)."""
    mine = images if isinstance(images, Fingerprints) else fingerprints(images)
    for name, reference in references.items():
        found = match(mine, reference)
        if found.count:
            row = found.first()
            how = "an exact copy" if found.exact[row] else (
                ("mirrored, " if found.mirrored[row] else "") + f"correlation {found.layout[row]:.3f} "
                f"(detail {found.detail[row]:.2f})")
            raise CxrganError(f"{what}: {found.count} of its {len(mine)} images are near-duplicates of images of "
                              f"{name} (the first: its image {row} ~ row {found.index[row]} there, {how}); {why}")
