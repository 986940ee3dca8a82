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

import functools
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
CACHE_FORMAT = "plastic_rl.omniglot/2"
SPLITS = ("paper", "vinyals", "lake")
PARTS = ("train", "validation", "test")
HOW_TO_GET = (
    "run `plastic-rl download omniglot --data-dir DIR`, or copy images_background.zip and images_evaluation.zip "
    "from https://github.com/brendenlake/omniglot/tree/master/python into DIR/omniglot/"
)


@dataclass(frozen=True)
class OmniglotImages:
    """Every Omniglot drawing at 31x31.

    ``images`` is ``(characters, drawings, 31, 31)`` ``uint8`` (255 = ink); ``characters`` the
    ``"Alphabet/characterNN"`` names in sorted order, row ``i`` of ``images`` being character ``i``;
    ``evaluation_alphabets`` the alphabets of the ``images_evaluation`` archive (Lake et al.'s test alphabets).
    """

    images: np.ndarray
    characters: tuple[str, ...]
    evaluation_alphabets: tuple[str, ...] = ()

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


# An archive's digest in this process, by path, size and modification time: hashed once, not once per env.
_ARCHIVE_DIGESTS: dict[tuple[str, int, int], str] = {}


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    if path.is_file():
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _ARCHIVE_DIGESTS:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            _ARCHIVE_DIGESTS[key] = f"sha256:{digest.hexdigest()}"
        return _ARCHIVE_DIGESTS[key]
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
    evaluation_alphabets: set[str] = set()
    for archive, path in sources.items():
        members = _png_members(path)
        pngs.update(members)
        if archive == "images_evaluation":
            evaluation_alphabets.update(name.split("/")[0] for name in members)
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
    return OmniglotImages(images, tuple(names), tuple(sorted(evaluation_alphabets)))


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
            evaluation_alphabets = tuple(header["evaluation_alphabets"])
    except Exception:  # missing, truncated or tampered with: never trusted, rebuilt
        return None
    if hashlib.sha256(images.tobytes()).hexdigest() != header.get("images_sha256") or len(characters) != len(images):
        return None
    return OmniglotImages(images, characters, evaluation_alphabets)


# The images read in this process, by cache file (its path, size and modification time) and sources: every env of a
# VecEnv, and every batch of held-out episodes, would otherwise read and checksum the 30 MB cache again (0.1 s an env).
_LOADED: dict[tuple[str, int, int, str], OmniglotImages] = {}


def _loaded_key(path: Path, fingerprints: dict[str, str]) -> tuple[str, int, int, str] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return str(path), stat.st_size, stat.st_mtime_ns, json.dumps(fingerprints, sort_keys=True)


def load_images(data_dir: str | os.PathLike | None = None) -> OmniglotImages:
    """All Omniglot images at 31x31, from the cache, (re)built from the data directory when needed; read once per
    process and cache file (the array is read-only: it is shared)."""
    folder = _omniglot_dir(data_dir)
    sources = {archive: _source(folder, archive) for archive in ARCHIVES}
    fingerprints = {archive: _fingerprint(path) for archive, path in sources.items()}
    path = _cache_path()
    key = _loaded_key(path, fingerprints)
    if key in _LOADED:
        return _LOADED[key]
    cached = _read_cache(path, fingerprints)
    if cached is not None:
        return _remembered(path, fingerprints, cached)
    # Once per machine (and after the data change): say so, or the first gym.make seems to hang for ~20 s.
    print(f"plastic-rl: preprocessing Omniglot into {path} (once; about 20 s) ...", file=sys.stderr, flush=True)
    built = _build(sources)
    header = dict(
        format=CACHE_FORMAT,
        sources=fingerprints,
        images_sha256=hashlib.sha256(built.images.tobytes()).hexdigest(),
        evaluation_alphabets=list(built.evaluation_alphabets),
    )
    with atomic_write(path) as handle:
        np.savez(
            handle, header=np.array(json.dumps(header)), images=built.images, characters=np.array(built.characters)
        )
    return _remembered(path, fingerprints, built)


def _remembered(path: Path, fingerprints: dict[str, str], images: OmniglotImages) -> OmniglotImages:
    images.images.setflags(write=False)
    key = _loaded_key(path, fingerprints)
    if key is not None:
        _LOADED[key] = images
    return images


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


@functools.cache
def vinyals_characters(part: str) -> tuple[str, ...]:
    """The characters of a part (``"train"``, ``"validation"``, ``"test"``) of Vinyals et al.'s split."""
    check_choice("part", part, PARTS)
    file_name = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}[part]
    text = resources.files("plastic_rl.data").joinpath(f"omniglot_splits/vinyals/{file_name}").read_text()
    names: dict[str, None] = {}
    for line in text.split():
        names[line.rsplit("/", 1)[0]] = None  # "Alphabet/characterNN/rotDDD": every rotation listed
    return tuple(names)


@dataclass(frozen=True)
class OmniglotSplit:
    """Which characters are trained on, validated on and tested on, and how rotations make classes.

    ``parts`` maps each part to its character names. With ``rotation_classes`` (Vinyals) each
    (character, rotation) pair is a class of its own; without (the paper) a class is a character and
    its rotation is drawn afresh per class per episode. Either way every rotation of a character
    belongs to the character's part only. With ``upright`` a class is a character as drawn, never turned.
    """

    name: str
    parts: dict[str, tuple[str, ...]]
    rotation_classes: bool
    upright: bool = False  # every class is a character as drawn, never turned (Lake et al.'s protocol)

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
        return cls("vinyals", {part: vinyals_characters(part) for part in PARTS}, rotation_classes=True)

    @classmethod
    def lake(cls, images: OmniglotImages, seed: int, validation_characters: int = 100) -> OmniglotSplit:
        """Lake et al.'s protocol: train on the background alphabets, test on the evaluation alphabets, upright;
        ``validation_characters`` of the background characters, drawn with ``seed``, held out for validation."""
        evaluation = set(images.evaluation_alphabets)
        test = tuple(name for name in images.characters if name.split("/")[0] in evaluation)
        background = [name for name in images.characters if name.split("/")[0] not in evaluation]
        if not test or validation_characters < 0 or validation_characters >= len(background):
            raise DataError(
                f"the 'lake' split needs characters from both archives and validation_characters (>= 0) fewer than "
                f"the {len(background)} background ones; got {len(test)} evaluation characters and "
                f"validation_characters {validation_characters}; {HOW_TO_GET}"
            )
        order = np.random.default_rng([seed, 16]).permutation(len(background))
        held_out = {background[index] for index in order[:validation_characters]}
        parts = {
            "train": tuple(name for name in background if name not in held_out),
            "validation": tuple(sorted(held_out)),
            "test": test,
        }
        return cls("lake", parts, rotation_classes=False, upright=True)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> OmniglotSplit:
        """A user's split: a file with ``[train]``, ``[validation]`` and ``[test]`` sections, or a folder with
        ``train.txt``, ``val.txt`` (or ``validation.txt``) and ``test.txt`` (the shipped Vinyals lists' layout);
        one ``Alphabet/characterNN`` a line (``#`` starts a comment). With ``/rotDDD`` on every line, listing all
        four rotations of each character, each rotation is a class (Vinyals' convention); without, a class is a
        character as drawn (upright)."""
        return parse_split(Path(path))

    def as_dict(self) -> dict:
        record = {"name": self.name, "parts": {part: list(names) for part, names in self.parts.items()}}
        return {**record, "upright": True} if self.upright else record  # earlier splits' digests stay as they were

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
        if self.upright:
            return rows, np.zeros(len(rows), dtype=np.int64)
        if not self.rotation_classes:
            return rows, None
        return np.repeat(rows, ROTATIONS), np.tile(np.arange(ROTATIONS), len(rows))


SPLIT_SECTIONS = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
SPLIT_FILES = {"train.txt": "train", "val.txt": "validation", "validation.txt": "validation", "test.txt": "test"}
ROTATION_NAMES = {f"rot{90 * turns:03d}": turns for turns in range(ROTATIONS)}


def _split_entries(path: Path) -> list[tuple[str, str, Path, int]]:
    """``(part, entry, file, line number)`` of each line of a split file or folder that names something."""
    entries = []
    if path.is_dir():
        files = sorted((SPLIT_FILES[file.name], file) for file in path.iterdir() if file.name in SPLIT_FILES)
        for part, file in files:
            for number, line in enumerate(file.read_text().splitlines(), 1):
                if text := line.split("#", 1)[0].strip():
                    entries.append((part, text, file, number))
        return entries
    section: str | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if text.startswith("[") and text.endswith("]"):
            section = SPLIT_SECTIONS.get(text[1:-1].strip().lower())
            if section is None:
                raise ValueError(
                    f"{path}:{number}: unknown section {text}; the sections are [train], [validation], [test]"
                )
        elif text:
            if section is None:
                raise ValueError(f"{path}:{number}: {text!r} comes before any [train], [validation] or [test] section")
            entries.append((section, text, path, number))
    return entries


def parse_split(path: Path) -> OmniglotSplit:
    """The split a user's split file or folder describes (see :meth:`OmniglotSplit.from_file`); a ValueError naming
    the file and line of what is wrong in it."""
    if not path.exists():
        raise ValueError(f"split file or folder {path} does not exist")
    owner: dict[str, tuple[str, Path, int]] = {}
    parts: dict[str, list[str]] = {part: [] for part in PARTS}
    rotations: dict[str, set[int]] = {}
    named_rotations: bool | None = None
    for part, entry, file, number in _split_entries(path):
        pieces = entry.split("/")
        if len(pieces) not in (2, 3) or not all(pieces) or (len(pieces) == 3 and pieces[2] not in ROTATION_NAMES):
            raise ValueError(
                f"{file}:{number}: {entry!r} is not Alphabet/characterNN or Alphabet/characterNN/rotDDD "
                f"(DDD one of 000, 090, 180, 270)"
            )
        if named_rotations is None:
            named_rotations = len(pieces) == 3
        elif named_rotations != (len(pieces) == 3):
            raise ValueError(f"{file}:{number}: {entry!r}: either every line names a rotation (/rotDDD) or none does")
        character = "/".join(pieces[:2])
        first = owner.setdefault(character, (part, file, number))
        if first[0] != part:
            raise ValueError(
                f"{file}:{number}: {character} is in the {part} part and, at {first[1]}:{first[2]}, in the {first[0]} "
                "part: a character belongs to one part"
            )
        if (part, file, number) == first:
            parts[part].append(character)
        if named_rotations:
            rotations.setdefault(character, set()).add(ROTATION_NAMES[pieces[2]])
    for character, listed in rotations.items():
        if len(listed) != ROTATIONS:
            raise ValueError(
                f"{path}: {character} lists {len(listed)} of its {ROTATIONS} rotations: list all of them (each "
                "rotation a class) or none (the character as drawn)"
            )
    empty = [part for part in ("train", "test") if not parts[part]]
    if empty:
        raise ValueError(f"{path}: the split's {' and '.join(empty)} part is empty")
    named = {part: tuple(names) for part, names in parts.items()}
    return OmniglotSplit(str(path), named, rotation_classes=bool(named_rotations), upright=not named_rotations)


def check_split(split: str) -> str:
    """``split`` if it is one of :data:`SPLITS` or the path of a split file or folder, else a ValueError."""
    if split not in SPLITS and not Path(split).exists():
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))} or the path of a split file or folder; "
                         f"got {split!r}")  # fmt: skip
    return split


def make_split(
    name: str,
    images: OmniglotImages,
    seed: int = 0,
    test_characters: int = 100,
    validation_characters: int = 100,
) -> OmniglotSplit:
    """The split called ``name`` (one of :data:`SPLITS`, or the path of a split file or folder: see
    :meth:`OmniglotSplit.from_file`) of ``images``' characters."""
    if name not in SPLITS and Path(name).exists():
        split = OmniglotSplit.from_file(name)
        known = set(images.characters)
        for part, names in split.parts.items():
            unknown = [character for character in names if character not in known]
            if unknown:
                raise DataError(
                    f"split {name}: its {part} part names {len(unknown)} characters the Omniglot data lacks "
                    f"(first: {unknown[0]!r})"
                )
        return split
    check_split(name)
    if name == "vinyals":
        return OmniglotSplit.vinyals()
    if name == "lake":
        return OmniglotSplit.lake(images, seed, validation_characters)
    return OmniglotSplit.paper(images.characters, seed, test_characters, validation_characters)


__all__ = [
    "ARCHIVES",
    "IMAGE_SIZE",
    "SPLITS",
    "OmniglotImages",
    "OmniglotSplit",
    "download",
    "load_images",
    "check_split",
    "make_split",
    "parse_split",
    "vinyals_characters",
]
