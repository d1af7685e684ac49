"""A user's folder of images with captions: `name.png` + `name.txt`, or `metadata.jsonl`.

`metadata.jsonl` (one JSON object a line with `file_name` and `text`, the common image-folder
convention) wins over `.txt` files when present. Bad data is never loaded silently: unreadable or
truncated images are skipped with a warning and counted (`strict=True` makes them fatal), a missing
caption is an error that lists the first files, an empty folder is an error naming the folder.
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from t2i.data.transforms import TransformConfig, apply

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class BadImageError(ValueError):
    """An image file that cannot be decoded."""


def load_image(path: Path) -> Image.Image:
    """Open and fully decode an image (truncated files fail here, not later)."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy() if img.mode != "P" else img.convert("RGBA")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImageError(f"unreadable image {path}: {err}") from err


def scan_folder(root: str | Path, split: str | None = None) -> list[tuple[Path, str]]:
    """(image path, caption) pairs of a folder, sorted by path; raises on missing captions.

    split: keep only the rows of metadata.jsonl whose "split" field equals it (rows without the
    field belong to every split); None keeps all. `.txt` captions have no split.
    """
    return read_folder(Path(root), split)[1]


def read_folder(
    root: Path, split: str | None
) -> tuple[dict[str, tuple[int, dict]] | None, list[tuple[Path, str]]]:
    """A folder's metadata.jsonl rows (None for .txt captions) and its (image, caption) pairs."""
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    metadata = read_metadata(root)
    return metadata, pairs_of(root, metadata, split)


def read_metadata(root: Path) -> dict[str, tuple[int, dict]] | None:
    """A folder's metadata.jsonl rows by file_name, each with its line number (for errors that
    name the line); None when the folder has no metadata.jsonl. Every line needs file_name, text."""
    meta = root / "metadata.jsonl"
    if not meta.exists():
        return None
    rows: dict[str, tuple[int, dict]] = {}
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name, _text = row["file_name"], row["text"]
            rows[name] = (n, row)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(
                f"{meta}:{n}: each line needs 'file_name' and 'text' ({err}): {line[:80]}"
            ) from err
    return rows


def pairs_of(
    root: Path, metadata: dict[str, tuple[int, dict]] | None, split: str | None
) -> list[tuple[Path, str]]:
    """The folder's (image, caption) pairs from its metadata rows, or its .txt files if None."""
    pairs = _from_txt(root) if metadata is None else _from_metadata(root, metadata, split)
    if not pairs:
        raise ValueError(
            f"no images in {root} (looked for {', '.join(IMAGE_EXTS)} files"
            f"{', recursively' if metadata is None else ' listed in metadata.jsonl'})"
        )
    return pairs


def _from_txt(root: Path) -> list[tuple[Path, str]]:
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    missing = [p for p in images if not p.with_suffix(".txt").exists()]
    if missing:
        first = ", ".join(str(p.relative_to(root)) for p in missing[:5])
        raise ValueError(
            f"{len(missing)} of {len(images)} images in {root} have no caption "
            f"(name.txt beside name.png, or a metadata.jsonl): {first}"
        )
    return [(p, p.with_suffix(".txt").read_text(encoding="utf-8").strip()) for p in images]


def _from_metadata(
    root: Path, metadata: dict[str, tuple[int, dict]], split: str | None
) -> list[tuple[Path, str]]:
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    rel = {p.relative_to(root).as_posix(): p for p in images}
    missing = [r for r in rel if r not in metadata]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(rel)} images in {root} have no line in metadata.jsonl: "
            f"{', '.join(missing[:5])}"
        )
    absent = [f for f in metadata if f not in rel]
    if absent:
        raise FileNotFoundError(
            f"{root / 'metadata.jsonl'} lists files that are not images in {root}: {absent[:5]}"
        )
    keep = [f for f in sorted(rel) if split is None or metadata[f][1].get("split") in (None, split)]
    return [(rel[f], str(metadata[f][1]["text"])) for f in keep]


class ImageFolder(Dataset):
    """Items {"image": (C, H, W) in [-1, 1], "caption": str, "path": str} from a folder.

    Args:
        root: the folder. transform: resize/crop/mode settings.
        check: decode every image once now, so bad ones are dropped and summarised up front.
        strict: a bad image raises instead of being skipped.
        split: keep only metadata.jsonl rows of this "split" (e.g. the emoji set's train/heldout);
            None keeps every row.
        seed: random crops/flips of item i are a function of (seed, i): reproducible.
    """

    def __init__(
        self,
        root: str | Path,
        transform: TransformConfig | None = None,
        check: bool = True,
        strict: bool = False,
        seed: int = 0,
        split: str | None = None,
    ):
        self.root, self.strict, self.seed = Path(root), strict, seed
        self.transform = transform or TransformConfig()
        # metadata.jsonl's rows by file_name (None for .txt captions), kept for readers of its
        # other fields such as t2i/data/balance.py
        self.metadata, self.items = read_folder(self.root, split)
        self.skipped: list[str] = []
        if check:
            self._check_all()

    def _check_all(self) -> None:
        good = []
        for path, caption in self.items:
            try:
                load_image(path)
                good.append((path, caption))
            except BadImageError as err:
                self._bad(err, path)
        self.items = good
        if self.skipped:
            warnings.warn(self.summary(), stacklevel=3)
        if not self.items:
            raise ValueError(f"no readable images in {self.root}: {self.summary()}")

    def _bad(self, err: BadImageError, path: Path) -> None:
        if self.strict:
            raise err
        self.skipped.append(str(path))
        warnings.warn(f"skipping {err}", stacklevel=3)

    def summary(self) -> str:
        """How many images were skipped, and the first few."""
        n, total = len(self.skipped), len(self.items) + len(self.skipped)
        return f"{self.root}: skipped {n} unreadable of {total} images: {self.skipped[:5]}"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        # A file that broke after the check is skipped: the next readable item stands in.
        for k in range(len(self.items)):
            path, caption = self.items[(index + k) % len(self.items)]
            try:
                img = load_image(path)
            except BadImageError as err:
                self._bad(err, path)
                continue
            rng = random.Random(self.seed * 1_000_003 + index)
            return {"image": apply(img, self.transform, rng), "caption": caption, "path": str(path)}
        raise ValueError(f"no readable images in {self.root}")
