"""Exact-duplicate handling and label conflicts, decided from content hashes.

* Copies of one image under one class: the first copy (earliest split, then path) is kept,
  the others are dropped, so a duplicate can never sit on both sides of a split.
* One image under several classes is a label conflict: every copy is kept out of training
  and evaluation, because no label can be trusted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

SPLIT_RANK = {"train": 0, "val": 1, "test": 2, None: 3}


@dataclass(frozen=True)
class Candidate:
    """A decodable image with its class and, for fixed-split datasets, its split."""

    path: str
    class_name: str
    sha256: str
    split: str | None = None


@dataclass(frozen=True)
class DuplicateGroup:
    sha256: str
    class_name: str
    kept: str
    dropped: list[str]
    splits: dict[str, str | None]

    @property
    def crosses_splits(self) -> bool:
        return len({s for s in self.splits.values() if s is not None}) > 1


@dataclass(frozen=True)
class Conflict:
    sha256: str
    paths: list[str]
    classes: list[str]


@dataclass
class Curation:
    kept: list[Candidate] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)


def curate(candidates: Sequence[Candidate]) -> Curation:
    """Split candidates into kept images, dropped duplicates and conflicts."""
    by_hash: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_hash[candidate.sha256].append(candidate)
    result = Curation()
    for digest in sorted(by_hash, key=lambda d: min(c.path for c in by_hash[d])):
        group = sorted(by_hash[digest], key=lambda c: (SPLIT_RANK[c.split], c.path))
        if len(group) == 1:
            result.kept.append(group[0])
            continue
        classes = sorted({c.class_name for c in group})
        if len(classes) > 1:
            result.conflicts.append(Conflict(digest, sorted(c.path for c in group), classes))
            continue
        keeper, *rest = group
        result.kept.append(keeper)
        result.duplicates.append(
            DuplicateGroup(
                sha256=digest,
                class_name=keeper.class_name,
                kept=keeper.path,
                dropped=[c.path for c in rest],
                splits={c.path: c.split for c in group},
            )
        )
    result.kept.sort(key=lambda c: c.path)
    return result
