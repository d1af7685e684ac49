"""WebDataset-style tar shards: `key.png` + `key.txt` members, sorted by key, read as a stream.

Written with Python's tarfile (no webdataset dependency). Reading splits the shard list across
DDP ranks (torch.distributed, when initialised) and DataLoader workers, so every process reads
whole shards of its own; give at least ranks x workers shards.
"""

from __future__ import annotations

import glob
import io
import random
import re
import tarfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from t2i.data.folder import IMAGE_EXTS, BadImageError, load_image, scan_folder
from t2i.data.transforms import TransformConfig, apply

_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_pattern(pattern: str) -> list[str]:
    """'shards/train-{000000..000009}.tar' or a glob ('shards/*.tar') -> sorted existing paths."""
    m = _BRACE.search(pattern)
    if m:
        lo, hi = m.group(1), m.group(2)
        width = len(lo)
        paths = [
            pattern[: m.start()] + str(i).zfill(width) + pattern[m.end() :]
            for i in range(int(lo), int(hi) + 1)
        ]
        missing = [p for p in paths if not Path(p).exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} shards of {pattern} missing: {missing[:3]}")
        return paths
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"no tar shards match {pattern!r}")
    return paths


def write_shards(
    samples: Iterable[tuple[str, bytes, str, str]],
    out_dir: str | Path,
    prefix: str = "train",
    shard_size: int = 1000,
) -> list[Path]:
    """Write (key, image bytes, image extension, caption) samples into `prefix-000000.tar`, ...

    Members of a shard are sorted by key; keys must be unique and contain no dot.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    batch: list = []
    for sample in samples:
        if "." in sample[0]:
            raise ValueError(f"shard key {sample[0]!r} contains a dot; keys name members key.ext")
        batch.append(sample)
        if len(batch) == shard_size:
            paths.append(_write_one(batch, out_dir / f"{prefix}-{len(paths):06d}.tar"))
            batch = []
    if batch:
        paths.append(_write_one(batch, out_dir / f"{prefix}-{len(paths):06d}.tar"))
    return paths


def _write_one(batch: list, path: Path) -> Path:
    tmp = path.with_suffix(".tar.tmp")
    with tarfile.open(tmp, "w") as tar:
        for key, data, ext, caption in sorted(batch, key=lambda s: s[0]):
            _add(tar, f"{key}{ext}", data)
            _add(tar, f"{key}.txt", caption.encode("utf-8"))
    tmp.replace(path)  # atomic: a reader never sees half a shard
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def pack_folder(
    src: str | Path,
    out_dir: str | Path,
    prefix: str = "train",
    shard_size: int = 1000,
    strict: bool = False,
) -> tuple[list[Path], int, list[str]]:
    """Folder of images + captions -> shards; returns (shard paths, samples written, skipped files).

    Every image is decoded once first: unreadable ones are skipped with a warning (or raise if
    `strict`), so shards hold only readable data. The original file bytes are stored.
    """
    pairs = scan_folder(src)
    skipped: list[str] = []

    def samples() -> Iterator[tuple[str, bytes, str, str]]:
        for k, (path, caption) in enumerate(pairs):
            try:
                load_image(path)
            except BadImageError as err:
                if strict:
                    raise
                warnings.warn(f"skipping {err}", stacklevel=2)
                skipped.append(str(path))
                continue
            yield f"{k:08d}", path.read_bytes(), path.suffix.lower(), caption

    paths = write_shards(samples(), out_dir, prefix, shard_size)
    if not paths:
        raise ValueError(f"no readable images in {src}; skipped {skipped[:5]}")
    return paths, len(pairs) - len(skipped), skipped


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def worker_slot() -> tuple[int, int]:
    """(slot, slots) of this process among DDP ranks x DataLoader workers."""
    rank, world = _rank_world()
    info = get_worker_info()
    wid, nw = (info.id, info.num_workers) if info else (0, 1)
    return rank * nw + wid, world * nw


def read_shard(path: str) -> Iterator[tuple[str, bytes, str, str]]:
    """(key, image bytes, extension, caption) of each complete sample in one shard, in order."""
    current: dict[str, bytes] = {}
    key = None
    with tarfile.open(path, "r|") as tar:  # streaming: works on pipes and huge files
        for member in tar:
            if not member.isfile():
                continue
            k, _, ext = member.name.partition(".")
            if k != key and key is not None:
                yield from _sample(path, key, current)
                current = {}
            key = k
            current["." + ext.lower()] = tar.extractfile(member).read()
    if key is not None:
        yield from _sample(path, key, current)


def _sample(path: str, key: str, members: dict[str, bytes]) -> Iterator[tuple]:
    img_ext = next((e for e in members if e in IMAGE_EXTS), None)
    if img_ext is None or ".txt" not in members:
        raise ValueError(f"{path}: sample {key!r} needs an image and a .txt, has {list(members)}")
    yield key, members[img_ext], img_ext, members[".txt"].decode("utf-8").strip()


class ShardDataset(IterableDataset):
    """Stream of items {"image", "caption", "key"} from tar shards, split over ranks and workers.

    Args:
        pattern: brace range ('train-{000000..000009}.tar'), glob, or a list of paths.
        shuffle: shuffle shard order (by seed + epoch) and items in a buffer of `buffer` items.
        strict: an unreadable image raises instead of being skipped with a warning.
    """

    def __init__(
        self,
        pattern: str | list[str],
        transform: TransformConfig | None = None,
        shuffle: bool = False,
        buffer: int = 256,
        seed: int = 0,
        strict: bool = False,
    ):
        self.paths = expand_pattern(pattern) if isinstance(pattern, str) else list(pattern)
        self.transform = transform or TransformConfig()
        self.shuffle, self.buffer, self.seed, self.strict = shuffle, buffer, seed, strict
        self.epoch = 0
        self.skipped: list[str] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def my_shards(self) -> list[str]:
        """The shards this process reads: every (rank x workers)-th, offset by its slot."""
        slot, slots = worker_slot()
        paths = list(self.paths)
        if self.shuffle:
            random.Random(self.seed * 7919 + self.epoch).shuffle(paths)
        if len(paths) < slots:
            raise ValueError(
                f"{len(paths)} shards for {slots} readers (ranks x workers): "
                f"pack into at least {slots} shards (t2i data pack --shard-size)"
            )
        return paths[slot::slots]

    def _decode(self, sample: tuple, rng: random.Random) -> dict | None:
        key, data, _, caption = sample
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                img = img.copy()
        except (OSError, SyntaxError, ValueError) as err:
            if self.strict:
                raise BadImageError(f"unreadable image {key}: {err}") from err
            warnings.warn(f"skipping unreadable image {key}: {err}", stacklevel=2)
            self.skipped.append(key)
            return None
        return {"image": apply(img, self.transform, rng), "caption": caption, "key": key}

    def __iter__(self) -> Iterator[dict]:
        rng = random.Random(self.seed * 104729 + self.epoch)
        buf: list[dict] = []
        for path in self.my_shards():
            for sample in read_shard(path):
                item = self._decode(sample, rng)
                if item is None:
                    continue
                if not self.shuffle:
                    yield item
                    continue
                buf.append(item)
                if len(buf) >= self.buffer:
                    yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf
