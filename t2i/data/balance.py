"""Drawing a folder's images by group: the images that share the values of chosen metadata.jsonl
fields count as one, so near-copies do not take the steps of everything else. In the emoji set an
emoji's base image and its five skin tones in one style are six of its 28,300 images; grouped by
("name", "style"), 15,301 groups remain and every other emoji is drawn 1.85x as often.

The view has length G * R (G groups, R the largest group's size): position j is group j mod G and
that group's member (j div G) mod (its size). The training loop's permutation of the view then draws
every group R times per pass, cycling through its members; members of a group whose size does not
divide R are drawn within one of each other's counts. Deterministic, so exact resume holds."""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.data import Dataset

from t2i.data.folder import ImageFolder


def folder_groups(dataset: Dataset, fields: tuple[str, ...]) -> list[int] | None:
    """The group ids of a training set to balance by `fields`; None when fields is empty."""
    if not fields:
        return None
    if not isinstance(dataset, ImageFolder):
        raise ValueError(
            f"balance {list(fields)} groups an image folder's metadata.jsonl rows; "
            f"this data is a {type(dataset).__name__}: drop balance"
        )
    return metadata_groups(dataset, fields)


def metadata_groups(folder: ImageFolder, fields: tuple[str, ...]) -> list[int]:
    """Group id of each of the folder's items (in its order): items with equal values of `fields`
    in metadata.jsonl share one. Errors name the folder, the field and the row."""
    if folder.metadata is None:
        raise ValueError(f"balance {list(fields)}: {folder.root} has no metadata.jsonl to group by")
    meta = folder.root / "metadata.jsonl"
    ids: dict[tuple, int] = {}
    out = []
    for path, _caption in folder.items:
        n, row = folder.metadata[Path(path).relative_to(folder.root).as_posix()]
        missing = [f for f in fields if f not in row]
        if missing:
            raise ValueError(
                f"balance {list(fields)}: {meta} line {n} has no field {missing[0]!r} "
                f"(its fields: {sorted(row)})"
            )
        key = tuple(json.dumps(row[f], sort_keys=True) for f in fields)
        out.append(ids.setdefault(key, len(ids)))
    return out


class GroupBalanced(Dataset):
    """The dataset seen through its groups (module docstring): len = groups x largest group."""

    def __init__(self, dataset: Dataset, groups: list[int]):
        if len(groups) != len(dataset):
            raise ValueError(f"{len(groups)} group ids for {len(dataset)} items")
        members: dict[int, list[int]] = {}
        for index, group in enumerate(groups):
            members.setdefault(group, []).append(index)
        self.dataset, self.members = dataset, list(members.values())
        self.repeats = max(len(m) for m in self.members)

    def __len__(self) -> int:
        return len(self.members) * self.repeats

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} outside a view of {len(self)}")
        group = self.members[index % len(self.members)]
        return self.dataset[group[(index // len(self.members)) % len(group)]]
