"""Seeded, stratified train/val/test assignment.

Each class is shuffled by its own generator seeded from ``(seed, class name)``, so the
split of one class does not change when another class gains or loses images, and the
result depends only on the seed and the set of paths (never on listing order).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping


def _counts(n: int, fractions: Mapping[str, float]) -> tuple[int, int]:
    """Validation and test counts for a class of ``n`` images (train takes the rest)."""
    n_val = int(n * fractions["val"] + 0.5)
    n_test = int(n * fractions["test"] + 0.5)
    # Classes of three or more images get at least one image in every non-empty split, so
    # per-class metrics exist for small custom datasets.
    if n >= 3:
        if fractions["val"] > 0:
            n_val = max(n_val, 1)
        if fractions["test"] > 0:
            n_test = max(n_test, 1)
    while n_val + n_test >= n and (n_val or n_test) and n > 0:
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def stratified_split(
    items: Iterable[tuple[str, str]], fractions: Mapping[str, float], seed: int
) -> dict[str, str]:
    """Assign each ``(path, class_name)`` to ``train``/``val``/``test``.

    Returns:
        Mapping from path to split name.
    """
    by_class: dict[str, list[str]] = defaultdict(list)
    for path, class_name in items:
        by_class[class_name].append(path)
    assignment: dict[str, str] = {}
    for class_name in sorted(by_class):
        paths = sorted(by_class[class_name])
        random.Random(f"flowerclf-split:{seed}:{class_name}").shuffle(paths)
        n_val, n_test = _counts(len(paths), fractions)
        for index, path in enumerate(paths):
            if index < n_test:
                assignment[path] = "test"
            elif index < n_test + n_val:
                assignment[path] = "val"
            else:
                assignment[path] = "train"
    return assignment
