"""Omniglot (Lake et al. 2015): the official release, a 31x31 cache of all its images, and its splits.

The data directory's ``omniglot/`` folder holds the two official archives, ``images_background.zip``
and ``images_evaluation.zip`` (or the folders they extract to), each laid out as
``<top>/<Alphabet>/characterNN/*.png``: 1,623 characters x 20 drawings of 105x105 binary images in
all. :func:`load_images` decodes them once into a cache under :func:`plastic_rl.data.cache_dir`
(every image resized to the paper's 31x31, ink = 1, in one ``uint8`` array), so that drawing an
episode decodes no image. The cache records a fingerprint of what it was made from (the archives'
SHA-256, or the extracted files' names, sizes and times) and a hash of its own array: it is rebuilt
when the source changes or when it does not read back intact.

Two splits of the characters (:class:`OmniglotSplit`):

- ``"paper"`` (Miconi et al. 2018): all 1,623 characters pooled; ``test_characters`` (100) held out
  for testing by a seed, and (our addition, for model selection) ``validation_characters`` more; a
  class is a character, turned by 0, 90, 180 or 270 degrees drawn afresh per class per episode.
- ``"vinyals"`` (Vinyals et al. 2016, the few-shot literature's standard): 1,028 training, 172
  validation and 423 test characters from the shipped class lists, each rotation a separate class.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import urllib.request
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from plastic_rl.core.files import atomic_write
from plastic_rl.core.options import check_choice
from plastic_rl.data import DataError, cache_dir, resolve_data_dir

IMAGE_SIZE = 31
ROTATIONS = 4
# The official archives and their published MD5s (github.com/brendenlake/omniglot, python/ folder).
ARCHIVES: dict[str, tuple[str, str]] = {
    "images_background": (
        "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_background.zip",
        "68d2efa1b9178cc56df9314c21c6e718",
    ),
    "images_evaluation": (
        "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_evaluation.zip",
        "6b91aef0f799c5bb55b94e3f2daec811",
    ),
}
CACHE_FORMAT = "plastic_rl.omniglot/1"
SPLITS = ("paper", "vinyals")
PARTS = ("train", "validation", "test")
HOW_TO_GET = (
    "run `plastic-rl download omniglot --data-dir DIR`, or copy images_background.zip and images_evaluation.zip "
    "from https://github.com/brendenlake/omniglot/tree/master/python into DIR/omniglot/"
)


@dataclass(frozen=True)
class OmniglotImages:
    """Every Omniglot drawing at 31x31.

    ``images`` is ``(characters, drawings, 31, 31)`` ``uint8`` (255 = ink); ``characters`` the
    ``"Alphabet/characterNN"`` names in sorted order, row ``i`` of ``images`` being character ``i``.
    """

    images: np.ndarray
    characters: tuple[str, ...]

    def index_of(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.characters)}


def _omniglot_dir(data_dir: str | os.PathLike | None) -> Path:
    return resolve_data_dir(data_dir) / "omniglot"


def _source(folder: Path, archive: str) -> Path:
    """The archive's zip, else its extracted folder; a DataError that says what to do otherwise."""
    zip_path, extracted = folder / f"{archive}.zip", folder / archive
    if zip_path.is_file():
        return zip_path
    if extracted.is_dir():
        return extracted
    raise DataError(
        f"Omniglot file {archive}.zip not found: looked for {zip_path} and the folder {extracted}; {HOW_TO_GET}"
    )


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return f"sha256:{digest.hexdigest()}"
    for file in sorted(path.rglob("*.png")):
        stat = file.stat()
        digest.update(f"{file.relative_to(path).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"listing:{digest.hexdigest()}"


def _png_members(path: Path) -> dict[str, dict[str, bytes]]:
    """``{"Alphabet/characterNN": {drawing file name: PNG bytes}}`` of one archive or folder."""
    characters: dict[str, dict[str, bytes]] = {}

    def add(parts: tuple[str, ...], read) -> None:
        # <top>/<Alphabet>/<character>/<drawing>.png, or without <top> in an extracted folder.
        if len(parts) >= 3 and parts[-1].endswith(".png"):
            characters.setdefault(f"{parts[-3]}/{parts[-2]}", {})[parts[-1]] = read()

    try:
        if path.is_file():
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    add(tuple(name.split("/")), lambda name=name: archive.read(name))
        else:
            for file in path.rglob("*.png"):
                add(file.relative_to(path).parts, file.read_bytes)
    except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as error:
        raise DataError(
            f"Omniglot file {path} is unreadable or corrupt ({error}); delete it and {HOW_TO_GET}"
        ) from error
    if not characters:
        raise DataError(f"Omniglot file {path} holds no <Alphabet>/<character>/*.png images; {HOW_TO_GET}")
    return characters


def _decode(png: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(png)) as image:
            gray = image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    except Exception as error:  # Pillow raises many types on a damaged PNG
        raise DataError(
            f"Omniglot image {where} cannot be decoded ({error}); delete the file and {HOW_TO_GET}"
        ) from error
    return 255 - np.asarray(gray, dtype=np.uint8)  # strokes are black on white: ink -> 255


def _build(sources: dict[str, Path]) -> OmniglotImages:
    pngs: dict[str, dict[str, bytes]] = {}
    for path in sources.values():
        pngs.update(_png_members(path))
    names = sorted(pngs)
    counts = {len(pngs[name]) for name in names}
    if len(counts) != 1:
        raise DataError(
            f"Omniglot characters must all have the same number of drawings; found {sorted(counts)} in "
            f"{', '.join(str(path) for path in sources.values())}; {HOW_TO_GET}"
        )
    drawings = counts.pop()
    images = np.empty((len(names), drawings, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for row, name in enumerate(names):
        for column, file in enumerate(sorted(pngs[name])):
            images[row, column] = _decode(pngs[name][file], f"{name}/{file}")
    return OmniglotImages(images, tuple(names))


def _cache_path() -> Path:
    return cache_dir() / f"omniglot-{IMAGE_SIZE}.npz"


def _read_cache(path: Path, fingerprints: dict[str, str]) -> OmniglotImages | None:
    """The cached images if the cache is intact and made from ``fingerprints``; ``None`` otherwise."""
    try:
        with np.load(path, allow_pickle=False) as cache:
            header = json.loads(str(cache["header"]))
            if header.get("format") != CACHE_FORMAT or header.get("sources") != fingerprints:
                return None
            images = cache["images"]
            characters = tuple(str(name) for name in cache["characters"])
    except Exception:  # missing, truncated or tampered with: never trusted, rebuilt
        return None
    if hashlib.sha256(images.tobytes()).hexdigest() != header.get("images_sha256") or len(characters) != len(images):
        return None
    return OmniglotImages(images, characters)


def load_images(data_dir: str | os.PathLike | None = None) -> OmniglotImages:
    """All Omniglot images at 31x31, from the cache, (re)built from the data directory when needed."""
    folder = _omniglot_dir(data_dir)
    sources = {archive: _source(folder, archive) for archive in ARCHIVES}
    fingerprints = {archive: _fingerprint(path) for archive, path in sources.items()}
    path = _cache_path()
    cached = _read_cache(path, fingerprints)
    if cached is not None:
        return cached
    # Once per machine (and after the data change): say so, or the first gym.make seems to hang for ~20 s.
    print(f"plastic-rl: preprocessing Omniglot into {path} (once; about 20 s) ...", file=sys.stderr, flush=True)
    built = _build(sources)
    header = dict(
        format=CACHE_FORMAT,
        sources=fingerprints,
        images_sha256=hashlib.sha256(built.images.tobytes()).hexdigest(),
    )
    with atomic_write(path) as handle:
        np.savez(
            handle, header=np.array(json.dumps(header)), images=built.images, characters=np.array(built.characters)
        )
    return built


def download(data_dir: Path) -> None:
    """Fetch the two official archives into ``data_dir/omniglot/`` (MD5-checked; present ones are kept)."""
    folder = Path(data_dir) / "omniglot"
    for archive, (url, md5) in ARCHIVES.items():
        target = folder / f"{archive}.zip"
        if target.is_file() or (folder / archive).is_dir():
            continue
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
        except OSError as error:
            raise DataError(f"could not fetch {url} ({error}); copy {archive}.zip into {folder} by hand") from error
        if hashlib.md5(payload).hexdigest() != md5:
            raise DataError(f"{url} did not match its published MD5 {md5}; nothing written to {target}")
        with atomic_write(target) as handle:
            handle.write(payload)


# --- splits -----------------------------------------------------------------------------------------


def vinyals_characters(part: str) -> list[str]:
    """The characters of a part (``"train"``, ``"validation"``, ``"test"``) of Vinyals et al.'s split."""
    check_choice("part", part, PARTS)
    file_name = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}[part]
    text = resources.files("plastic_rl.data").joinpath(f"omniglot_splits/vinyals/{file_name}").read_text()
    names: dict[str, None] = {}
    for line in text.split():
        names[line.rsplit("/", 1)[0]] = None  # "Alphabet/characterNN/rotDDD": every rotation listed
    return list(names)


@dataclass(frozen=True)
class OmniglotSplit:
    """Which characters are trained on, validated on and tested on, and how rotations make classes.

    ``parts`` maps each part to its character names. With ``rotation_classes`` (Vinyals) each
    (character, rotation) pair is a class of its own; without (the paper) a class is a character and
    its rotation is drawn afresh per class per episode. Either way every rotation of a character
    belongs to the character's part only.
    """

    name: str
    parts: dict[str, tuple[str, ...]]
    rotation_classes: bool

    @classmethod
    def paper(
        cls, characters: tuple[str, ...], seed: int, test_characters: int = 100, validation_characters: int = 100
    ) -> OmniglotSplit:
        """The paper's split of ``characters`` drawn with ``seed``: test, validation, the rest for training."""
        held_out = test_characters + validation_characters
        if test_characters < 1 or validation_characters < 0 or held_out >= len(characters):
            raise ValueError(
                f"test_characters (>= 1) + validation_characters (>= 0) must leave training characters out of "
                f"{len(characters)}; got {test_characters} + {validation_characters}"
            )
        order = np.random.default_rng([seed, 15]).permutation(len(characters))
        pick = [characters[index] for index in order]
        return cls(
            "paper",
            {
                "test": tuple(sorted(pick[:test_characters])),
                "validation": tuple(sorted(pick[test_characters:held_out])),
                "train": tuple(sorted(pick[held_out:])),
            },
            rotation_classes=False,
        )

    @classmethod
    def vinyals(cls) -> OmniglotSplit:
        """Vinyals et al.'s split from the shipped class lists."""
        return cls("vinyals", {part: tuple(vinyals_characters(part)) for part in PARTS}, rotation_classes=True)

    def as_dict(self) -> dict:
        return {"name": self.name, "parts": {part: list(names) for part, names in self.parts.items()}}

    def classes(self, part: str, images: OmniglotImages) -> tuple[np.ndarray, np.ndarray | None]:
        """A part's classes: character rows of ``images`` and their rotations (``None``: drawn per episode)."""
        check_choice("part", part, PARTS)
        index = images.index_of()
        missing = [name for name in self.parts[part] if name not in index]
        if missing:
            raise DataError(
                f"the {self.name!r} split's {part} part names {len(missing)} characters the Omniglot data lacks "
                f"(first: {missing[0]!r}); {HOW_TO_GET}"
            )
        rows = np.array([index[name] for name in self.parts[part]], dtype=np.int64)
        if not len(rows):
            raise ValueError(f"the {self.name!r} split has no {part} characters")
        if not self.rotation_classes:
            return rows, None
        return np.repeat(rows, ROTATIONS), np.tile(np.arange(ROTATIONS), len(rows))


def make_split(
    name: str,
    images: OmniglotImages,
    seed: int = 0,
    test_characters: int = 100,
    validation_characters: int = 100,
) -> OmniglotSplit:
    """The split called ``name`` (one of :data:`SPLITS`) of ``images``' characters."""
    check_choice("split", name, SPLITS)
    if name == "vinyals":
        return OmniglotSplit.vinyals()
    return OmniglotSplit.paper(images.characters, seed, test_characters, validation_characters)


__all__ = [
    "ARCHIVES",
    "IMAGE_SIZE",
    "SPLITS",
    "OmniglotImages",
    "OmniglotSplit",
    "download",
    "load_images",
    "make_split",
    "vinyals_characters",
]
