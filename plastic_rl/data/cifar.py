"""CIFAR-10 in its official Python format, as the grayscale images of the paper's Experiment 2.

The official archive ``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/`` with
``data_batch_1`` ... ``data_batch_5`` (10,000 training images each), ``test_batch`` (the 10,000 test
images) and ``batches.meta``. Each batch is a Python-2 pickle of a dict whose ``b"data"`` is a
``(10000, 3072)`` uint8 array: per row the 1,024 red values, then green, then blue, each plane
row-major 32 x 32. The reader uses whichever training batches are present.

Pickles can run code when loaded, so the batches are read with a restricted unpickler that builds
only plain containers, strings, numbers and numpy arrays; anything else (a tampered file that asks
for ``os.system``, say) is refused with a :class:`~plastic_rl.data.DataError`.

Grayscale, as the authors: the three colour planes are summed (R + G + B, 0..765), the image's own
mean is subtracted and the result divided by its largest absolute value, so that every image lies in
[-1, 1] with mean 0 and at least one pixel at -1 or +1 (an image of one flat colour becomes all 0).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from plastic_rl.data import DataError, resolve_data_dir

ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAINING_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
# The published MD5 of each file of the official archive (as the CIFAR-10 loaders of torchvision and others check).
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
OFFICIAL_BATCH_IMAGES = 10_000
SPLITS = ("train", "test")
IMAGE_SIDE = 32
PIXELS = IMAGE_SIDE * IMAGE_SIDE
HOW_TO_GET = (
    "run 'plastic-rl download cifar' (or unpack the official cifar-10-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html into the data directory, or pass --data-dir / set PLASTIC_RL_DATA)"
)


def _numpy_reconstruct():
    # numpy 2 moved numpy.core to numpy._core; the official files name the old path.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


def _latin1_bytes():
    # Python 3 writes bytes into a protocol-2 pickle as _codecs.encode(text, "latin1"); allow that codec only.
    def encode(text: str, encoding: str = "utf-8") -> bytes:
        if encoding != "latin1" or not isinstance(text, str):
            raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
        return text.encode("latin1")

    return encode


# The only globals a CIFAR batch needs: numpy's array reconstruction (and the bytes of a batch
# written by Python 3). Containers, str, bytes, int and float are pickle opcodes and need no global.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data and numpy arrays and refuses every other global."""

    def find_class(self, module: str, name: str):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}")
        return allowed()


def read_pickle(path: Path) -> object:
    """The object in the pickle ``path``, loaded with the restricted unpickler.

    Raises :class:`DataError` for a missing, unreadable, truncated or tampered file.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"CIFAR-10 file {path.name} not found in {path.parent}; {HOW_TO_GET}") from None
    except OSError as error:
        raise DataError(f"CIFAR-10 file {path} cannot be read ({error}); {HOW_TO_GET}") from None
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # any failure to unpickle means a corrupt or tampered file
        raise DataError(f"CIFAR-10 file {path} is corrupt or not an official batch ({error}); {HOW_TO_GET}") from None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One official batch file: its images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64.

    A file with an official batch's name and size (10,000 images) must have its published MD5: a flipped bit in
    the pixels or labels would otherwise load silently. Files of other sizes in the same format (a subset, or the
    tiny batches the tests write) are read as they are."""
    record = read_pickle(path)
    data = record.get(b"data") if isinstance(record, dict) else None
    labels = record.get(b"labels") if isinstance(record, dict) else None
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * PIXELS or data.dtype != np.uint8:
        raise DataError(f"CIFAR-10 file {path} has no (N, 3072) uint8 b'data' array; {HOW_TO_GET}")
    if not isinstance(labels, list) or len(labels) != len(data):
        raise DataError(f"CIFAR-10 file {path} has no list of {len(data)} b'labels'; {HOW_TO_GET}")
    if len(data) == OFFICIAL_BATCH_IMAGES and path.name in BATCH_MD5 and (found := _md5(path)) != BATCH_MD5[path.name]:
        raise DataError(
            f"CIFAR-10 file {path} is corrupt: its MD5 is {found}, not the published {BATCH_MD5[path.name]}; "
            f"{HOW_TO_GET}"
        )
    return data.reshape(-1, 3, IMAGE_SIDE, IMAGE_SIDE), np.asarray(labels, dtype=np.int64)


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """The authors' grayscale of uint8 RGB images ``(N, 3, 32, 32)``: ``(N, 1024)`` float32 in [-1, 1].

    R + G + B per pixel, minus the image's mean, divided by the image's largest absolute value.
    """
    summed = images.astype(np.float32).sum(axis=1).reshape(len(images), -1)
    centred = summed - summed.mean(axis=1, keepdims=True)
    largest = np.abs(centred).max(axis=1, keepdims=True)
    return np.divide(centred, largest, out=np.zeros_like(centred), where=largest > 0)


def batch_files(data_dir: Path, split: str) -> list[Path]:
    """The batch files of ``split`` (``"train"``: whichever of data_batch_1..5 exist; ``"test"``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(repr(s) for s in SPLITS)}; got {split!r}")
    folder = data_dir / FOLDER
    if split == "test":
        return [folder / TEST_BATCH]
    present = [folder / name for name in TRAINING_BATCHES if (folder / name).is_file()]
    if not present:
        raise DataError(f"no CIFAR-10 training batch (data_batch_1 ... data_batch_5) found in {folder}; {HOW_TO_GET}")
    return present


def load_grayscale(split: str = "train", data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The grayscale images of ``split`` (``"train"`` or ``"test"``) as ``(N, 1024)`` float32 in [-1, 1].

    ``data_dir`` is resolved by :func:`plastic_rl.data.resolve_data_dir`; the images are read from
    its ``cifar-10-batches-py/`` folder.
    """
    files = batch_files(resolve_data_dir(data_dir), split)
    return np.concatenate([to_grayscale(read_batch(path)[0]) for path in files])


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract(archive: Path, data_dir: Path) -> None:
    """Unpack the archive's regular files under ``cifar-10-batches-py/`` only (no links, no paths out)."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if member.isdir():
                continue
            if not member.isfile() or len(parts) != 2 or parts[0] != FOLDER or parts[1] in ("..", "."):
                raise DataError(f"{archive} holds an unexpected member {member.name!r}; refusing to unpack it")
            source = tar.extractfile(member)
            assert source is not None, "a regular file member has contents"
            target = data_dir / FOLDER / parts[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            with source, tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as partial:
                shutil.copyfileobj(source, partial)
            os.replace(partial.name, target)


def download(data_dir: Path) -> None:
    """Fetch and unpack the official archive into ``data_dir`` unless the test batch is already there.

    The download's md5 is checked against the published one before anything is unpacked.
    """
    if (data_dir / FOLDER / TEST_BATCH).is_file() and (data_dir / FOLDER / TRAINING_BATCHES[0]).is_file():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir) as scratch:
        archive = Path(scratch) / "cifar-10-python.tar.gz"
        try:
            with urllib.request.urlopen(ARCHIVE_URL, timeout=60) as response, open(archive, "wb") as file:
                shutil.copyfileobj(response, file)
        except OSError as error:
            raise DataError(
                f"could not download {ARCHIVE_URL} ({error}); fetch it by hand and unpack it into {data_dir}"
            ) from None
        found = _md5(archive)
        if found != ARCHIVE_MD5:
            raise DataError(f"{ARCHIVE_URL} downloaded with md5 {found}, not the published {ARCHIVE_MD5}; try again")
        _extract(archive, data_dir)
