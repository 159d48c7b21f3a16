"""``flowerclf data prepare``: raw photos -> validated, de-duplicated, seeded split + manifest.

Layout under the data root::

    <root>/raw/<raw_name>/          immutable copy of the source (shared by subset recipes)
    <root>/cache/scan-<raw_name>.json  per-file scan results, keyed by size and mtime
    <root>/<name>/manifest.csv      the split (see manifest.py)
    <root>/<name>/classes.json
    <root>/<name>/dataset.json      how it was made: recipe, source, seed, manifest hash
    <root>/<name>/report.{json,md}  counts, exclusions, duplicates, conflicts, sizes
    <root>/<name>/class_counts.png

``<root>/<name>/`` is written as a whole: everything goes into a staging directory that is
swapped in at the end, so ``manifest.csv``, ``dataset.json`` (with the manifest's sha256)
and the report always belong to the same run, also after Ctrl-C. One preparation at a time
runs per data root (a lock file), since datasets share the raw copies and scan caches.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flowerclf.core.fs import exclusive_lock, staged_directory, write_atomic
from flowerclf.core.imaging import DEFAULT_MAX_PIXELS
from flowerclf.data.curation import Candidate, curate
from flowerclf.data.manifest import DATASET_FILE, ManifestRow, write_manifest
from flowerclf.data.recipes import SPLITS, RawListing, Recipe, make_recipe
from flowerclf.data.report import REPORT_JSON, write_report_files
from flowerclf.data.scan import ScanResult, scan_files
from flowerclf.data.sources import acquire_raw, default_data_root
from flowerclf.data.split import stratified_split

log = logging.getLogger(__name__)

LOCK_FILE = ".prepare.lock"
# What dataset.json repeats from the report (the training side reads it).
DATASET_INFO_KEYS = (
    "dataset", "recipe", "source", "raw_dir", "seed", "split_mode", "fractions",
    "num_images", "num_classes", "classes", "splits", "manifest_sha256",
)  # fmt: skip


@dataclass(frozen=True)
class PrepareOptions:
    """Everything ``prepare_dataset`` needs, independent of Hydra."""

    name: str
    recipe: str
    root: Path
    source: str | None = None
    source_sha256: str | None = None
    classes: Sequence[str] | None = None
    split: str = "random"
    fractions: Mapping[str, float] | None = None
    seed: int = 42
    max_pixels: int = DEFAULT_MAX_PIXELS
    scan_workers: int = 2
    refresh: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> PrepareOptions:
        """Build from a composed config (``cfg.data`` plus the top-level ``seed``)."""
        data = cfg.data
        return cls(
            name=data.name,
            recipe=data.recipe,
            root=resolve_root(data.root),
            source=data.source,
            source_sha256=data.source_sha256,
            classes=list(data.classes) if data.classes else None,
            split=data.split,
            fractions=dict(data.fractions),
            seed=int(cfg.seed),
            max_pixels=int(data.max_pixels),
            scan_workers=int(data.scan_workers),
            refresh=bool(data.refresh),
        )


def resolve_root(root: str | Path | None) -> Path:
    """``data.root`` as an absolute path, defaulting to :func:`default_data_root`."""
    return (Path(root).expanduser() if root else default_data_root()).resolve()


def _load_scan_cache(path: Path, max_pixels: int) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    if payload.get("max_pixels") != max_pixels or payload.get("version") != 1:
        return {}
    return dict(payload.get("files", {}))


def _scan_with_cache(
    raw_dir: Path, paths: list[str], cache_path: Path, max_pixels: int, workers: int
) -> dict[str, ScanResult]:
    """Scan files, reusing results for files whose size and mtime are unchanged."""
    cache = _load_scan_cache(cache_path, max_pixels)
    results: dict[str, ScanResult] = {}
    todo: list[str] = []
    stamps: dict[str, list[int]] = {}
    for relative in paths:
        stat = (raw_dir / relative).stat()
        stamps[relative] = [stat.st_size, stat.st_mtime_ns]
        entry = cache.get(relative)
        if entry and entry.get("stamp") == stamps[relative]:
            results[relative] = ScanResult(**entry["result"])
        else:
            todo.append(relative)
    if todo:
        log.info("decoding %d files (%d cached)", len(todo), len(results))
        results.update(scan_files(raw_dir, todo, max_pixels=max_pixels, workers=workers))
    else:
        log.info("all %d files unchanged since the last scan; using cached results", len(paths))
    files = {p: {"stamp": stamps[p], "result": asdict(results[p])} for p in sorted(results)}
    payload = {"version": 1, "max_pixels": max_pixels, "files": files}
    write_atomic(cache_path, json.dumps(payload).encode("utf-8"))
    return results


def _size_stats(rows: Sequence[ManifestRow], scans: Mapping[str, ScanResult]) -> dict[str, Any]:
    if not rows:
        return {}

    def describe(values: list[float]) -> dict[str, float]:
        return {
            "min": min(values),
            "median": statistics.median(values),
            "mean": round(statistics.fmean(values), 2),
            "max": max(values),
        }

    return {
        "width": describe([r.width for r in rows]),
        "height": describe([r.height for r in rows]),
        "shorter_side": describe([min(r.width, r.height) for r in rows]),
        "aspect_ratio": {
            k: round(v, 3) for k, v in describe([r.width / r.height for r in rows]).items()
        },
        "formats": dict(sorted(Counter(scans[r.path].image_format for r in rows).items())),
        "modes": dict(sorted(Counter(scans[r.path].mode for r in rows).items())),
    }


def build_manifest(
    listing: RawListing,
    scans: Mapping[str, ScanResult],
    split_mode: str,
    fractions: Mapping[str, float],
    seed: int,
) -> tuple[list[ManifestRow], dict[str, Any]]:
    """Turn scan results into manifest rows plus the report's bookkeeping sections."""
    excluded: list[dict[str, str]] = []
    candidates: list[Candidate] = []
    for item in listing.items:
        if item.problem is not None or item.class_name is None:
            excluded.append(
                {"path": item.path, "reason": item.problem or "no class", "kind": "invalid"}
            )
            continue
        scan = scans[item.path]
        if scan.error is not None or scan.sha256 is None:
            excluded.append({"path": item.path, "reason": scan.error or "?", "kind": "invalid"})
            continue
        split = item.official_split if split_mode == "official" else None
        candidates.append(Candidate(item.path, item.class_name, scan.sha256, split))

    curation = curate(candidates)
    conflicts = []
    for conflict in curation.conflicts:
        conflicts.append(
            {
                "sha256": conflict.sha256,
                "paths": conflict.paths,
                "classes": conflict.classes,
                "action": "all copies excluded from training and evaluation",
            }
        )
        for path in conflict.paths:
            others = [p for p in conflict.paths if p != path]
            excluded.append(
                {
                    "path": path,
                    "reason": f"label conflict: identical image also labelled as {others}",
                    "kind": "conflict",
                }
            )
    duplicates = []
    for group in curation.duplicates:
        if split_mode != "official":
            where = "before splitting, so copies cannot straddle splits"
        elif group.crosses_splits:
            where = "across official splits; the earliest split keeps its copy"
        else:
            where = "within one official split"
        duplicates.append(
            {
                "sha256": group.sha256,
                "class_name": group.class_name,
                "kept": group.kept,
                "dropped": group.dropped,
                "official_splits": group.splits if split_mode == "official" else None,
                "action": f"kept {group.kept}, dropped {len(group.dropped)} identical "
                f"cop{'y' if len(group.dropped) == 1 else 'ies'} ({where})",
            }
        )
        for path in group.dropped:
            excluded.append(
                {"path": path, "reason": f"exact duplicate of {group.kept}", "kind": "duplicate"}
            )

    if split_mode == "official":
        assignment = {c.path: c.split or "train" for c in curation.kept}
    else:
        assignment = stratified_split(
            ((c.path, c.class_name) for c in curation.kept), fractions, seed
        )
    label_of = {name: index for index, name in enumerate(listing.classes)}
    rows = [
        ManifestRow(
            id=index,
            path=c.path,
            label=label_of[c.class_name],
            class_name=c.class_name,
            split=assignment[c.path],
            sha256=c.sha256,
            width=scans[c.path].width or 0,
            height=scans[c.path].height or 0,
        )
        for index, c in enumerate(curation.kept)
    ]
    excluded.sort(key=lambda e: e["path"])
    return rows, {"excluded": excluded, "conflicts": conflicts, "duplicates": duplicates}


def _official_sizes(listing: RawListing) -> dict[str, int] | None:
    if not listing.has_official_split:
        return None
    counts = Counter(i.official_split for i in listing.items if i.official_split)
    return {s: counts.get(s, 0) for s in SPLITS}


def prepare_dataset(options: PrepareOptions) -> dict[str, Any]:
    """Acquire, validate, de-duplicate, split and write manifest + report.

    Returns:
        The report (also written to ``<root>/<name>/report.json``).
    """
    recipe: Recipe = make_recipe(options.recipe, options.classes)
    root = options.root
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / LOCK_FILE):
        raw_dir, source_used = acquire_raw(
            recipe,
            options.source,
            root,
            refresh=options.refresh,
            source_sha256=options.source_sha256,
        )
        listing = recipe.list_items(raw_dir)
        to_scan = [i.path for i in listing.items if i.problem is None and i.class_name is not None]
        scans = _scan_with_cache(
            raw_dir,
            to_scan,
            root / "cache" / f"scan-{recipe.raw_name}.json",
            options.max_pixels,
            options.scan_workers,
        )
        fractions = dict(options.fractions or {"train": 0.8, "val": 0.1, "test": 0.1})
        rows, bookkeeping = build_manifest(listing, scans, options.split, fractions, options.seed)
        out_dir = root / options.name
        with staged_directory(out_dir) as staging:
            digest = write_manifest(staging, rows, listing.classes)
            report = _make_report(
                options, recipe, listing, scans, rows, bookkeeping, fractions,
                raw_dir=raw_dir, out_dir=out_dir, source_used=source_used, digest=digest,
            )  # fmt: skip
            dataset_info = {key: report[key] for key in DATASET_INFO_KEYS}
            write_atomic(
                staging / DATASET_FILE,
                (json.dumps(dataset_info, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
            )
            write_report_files(staging, report)
    return report


def _make_report(
    options: PrepareOptions,
    recipe: Recipe,
    listing: RawListing,
    scans: Mapping[str, ScanResult],
    rows: Sequence[ManifestRow],
    bookkeeping: Mapping[str, Any],
    fractions: Mapping[str, float],
    *,
    raw_dir: Path,
    out_dir: Path,
    source_used: str,
    digest: str,
) -> dict[str, Any]:
    root = options.root
    per_class = {c: dict.fromkeys(SPLITS, 0) for c in listing.classes}
    for row in rows:
        per_class[row.class_name][row.split] += 1
    split_counts = {s: sum(1 for r in rows if r.split == s) for s in SPLITS}
    official = _official_sizes(listing)
    notes = []
    if official:
        notes.append(
            f"official split sizes {official}; after removing duplicate copies and label "
            f"conflicts the prepared split is {split_counts}. A duplicate found in two "
            f"official splits keeps its copy in the earlier split (train < val < test) so no "
            f"image is both trained and tested on."
        )
    return {
        "dataset": options.name,
        "recipe": options.recipe,
        "description": recipe.description,
        "source": source_used,
        "licence": recipe.licence,
        "citation": recipe.citation,
        "data_root": str(root),
        "raw_dir": str(raw_dir.relative_to(root)),
        "prepared_dir": str(out_dir.relative_to(root)),
        "seed": options.seed,
        "split_mode": options.split,
        "fractions": dict(fractions) if options.split == "random" else None,
        "num_files": len(listing.items),
        "num_decodable": sum(1 for s in scans.values() if s.error is None),
        "num_images": len(rows),
        "num_classes": len(listing.classes),
        "classes": listing.classes,
        "ignored_classes": listing.ignored_classes,
        "splits": split_counts,
        "per_class": per_class,
        "official_split": official,
        "excluded": bookkeeping["excluded"],
        "conflicts": bookkeeping["conflicts"],
        "duplicates": bookkeeping["duplicates"],
        "size_stats": _size_stats(rows, scans),
        "notes": notes,
        "manifest": str((out_dir / "manifest.csv").relative_to(root)),
        "manifest_sha256": digest,
    }


def load_report(prepared_dir: Path) -> dict[str, Any]:
    """Read the report that ``prepare_dataset`` wrote."""
    path = prepared_dir / REPORT_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; run `flowerclf data prepare` with the same data=/data.root= first"
        )
    return dict(json.loads(path.read_text(encoding="utf-8")))
