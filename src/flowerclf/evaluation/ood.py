"""``flowerclf evaluate <package> --ood``: how well each unknown score separates known
images from images the model should reject.

In-distribution: the test split of the package's dataset. Out-of-distribution groups:

- ``unseen_species``: Oxford-102 photos of species the model was not trained on (every
  class whose name shares a word with a model class is left out: "oxeye daisy",
  "desert-rose", "siam tulip"... for a tf_flowers model);
- ``non_flower_photos``: photographs that ship with packages already installed
  (matplotlib's sample data, scikit-learn's ``china.jpg``; never its ``flower.jpg``), each
  also seen as a few random crops so that a handful of photos gives a usable sample;
- ``synthetic``: Gaussian and uniform noise, uniform colours, gradients and text renders.

For each method of :data:`flowerclf.core.open_set.METHODS`: AUROC, FPR at 95 % TPR and the
share of each group rejected at the package's fitted threshold (plus the share of known
test images kept), as ``ood.json``, ``ood.md`` and ``ood_histograms.png``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from flowerclf.core.errors import UsageError
from flowerclf.core.imaging import ImageDecodeError, load_rgb
from flowerclf.core.open_set import (
    METHODS,
    OPEN_SET_FILE_KEY,
    STATS_METHODS,
    OpenSetStats,
    unknown_scores,
)
from flowerclf.core.package_format import ModelPackage, load_package
from flowerclf.inference.backends import DEFAULT_BACKEND
from flowerclf.inference.classifier import Classifier
from flowerclf.metrics.open_set import rejected_share, separation

log = logging.getLogger(__name__)

DEFAULT_MAX_IMAGES = 500  # per group: enough for a stable AUROC, minutes on a CPU
CROPS_PER_PHOTO = 8
SYNTHETIC_KINDS = ("gaussian_noise", "uniform_noise", "uniform_colour", "gradient", "text")
GROUPS = ("unseen_species", "non_flower_photos", "synthetic")
TEXT_LINES = (
    "INVOICE 2024-113", "Hello, world", "The quick brown fox", "flowerclf", "E = mc^2",
    "Lorem ipsum dolor", "STOP", "Meeting at 10:30", "x = np.zeros(3)", "404 Not Found",
)  # fmt: skip


@dataclass
class Scored:
    """One set of images and each method's unknown scores for it."""

    name: str
    scores: dict[str, np.ndarray]
    count: int


# --- the image sets ---------------------------------------------------------------------


def _singular_words(name: str) -> set[str]:
    words = {w for w in re.split(r"[^a-z]+", name.lower()) if w}
    return words | {w[:-1] for w in words if w.endswith("s") and len(w) > 3}


def unseen_species_paths(
    oxford_root: Path, model_classes: Sequence[str], limit: int, seed: int = 0
) -> tuple[list[Path], list[str]]:
    """Oxford-102 images of species that share no name word with ``model_classes``.

    Returns:
        Up to ``limit`` image paths (a seeded random sample) and the excluded class names.
    """
    from scipy.io import loadmat  # training extra (scikit-learn brings SciPy)

    labels_file = oxford_root / "imagelabels.mat"
    if not labels_file.is_file() or not (oxford_root / "jpg").is_dir():
        raise UsageError(
            f"{oxford_root} is not the Oxford-102 dataset (imagelabels.mat, jpg/): pass "
            f"ood.oxford_root=DIR"
        )
    names = _oxford_names(oxford_root)
    labels = loadmat(labels_file)["labels"].ravel().astype(int)
    known_words = set().union(*(_singular_words(c) for c in model_classes))
    excluded = sorted(n for n in names.values() if _singular_words(n) & known_words)
    if len(excluded) == len(names):
        raise UsageError("every Oxford-102 class overlaps the model's classes")
    keep = [i for i, label in enumerate(labels) if names[int(label)] not in excluded]
    chosen = np.random.default_rng(seed).permutation(keep)[:limit]
    paths = [oxford_root / "jpg" / f"image_{i + 1:05d}.jpg" for i in sorted(chosen)]
    return paths, excluded


def _oxford_names(oxford_root: Path) -> dict[int, str]:
    """Label (1-based, as in ``imagelabels.mat``) -> class name."""
    names_file = oxford_root / "cat_to_name.json"
    if names_file.is_file():
        return {int(k): v for k, v in json.loads(names_file.read_text()).items()}
    resource = resources.files("flowerclf.data.resources").joinpath("oxford102_classes.json")
    listed = json.loads(resource.read_text(encoding="utf-8"))["names"]
    return {index + 1: str(name) for index, name in enumerate(listed)}


def bundled_photos() -> dict[str, Path]:
    """Photographs shipped by packages in the dependency tree (none of them a flower)."""
    found: dict[str, Path] = {}
    try:
        import matplotlib

        sample = Path(matplotlib.get_data_path()) / "sample_data"
        for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
            if (sample / name).is_file():
                found[f"matplotlib/{name}"] = sample / name
    except ImportError:
        pass
    try:
        import sklearn

        images = Path(sklearn.__file__).parent / "datasets" / "images"
        if (images / "china.jpg").is_file():  # its flower.jpg is a flower: never used
            found["sklearn/china.jpg"] = images / "china.jpg"
    except ImportError:
        pass
    return found


def photo_views(image: Image.Image, crops: int, rng: np.random.Generator) -> Iterator[Image.Image]:
    """The whole photo, then ``crops`` random square crops of 35-90 % of its short side."""
    yield image
    width, height = image.size
    for _ in range(crops):
        side = int(min(width, height) * rng.uniform(0.35, 0.9))
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        yield image.crop((left, top, left + side, top + side))


def synthetic_image(kind: str, rng: np.random.Generator, size: int = 256) -> Image.Image:
    """One synthetic non-flower image of ``kind`` (see :data:`SYNTHETIC_KINDS`)."""
    if kind == "gaussian_noise":
        pixels = rng.normal(127, rng.uniform(20, 80), (size, size, 3))
    elif kind == "uniform_noise":
        pixels = rng.uniform(0, 255, (size, size, 3))
    elif kind == "uniform_colour":
        pixels = np.broadcast_to(rng.uniform(0, 255, 3), (size, size, 3))
    elif kind == "gradient":
        ramp = np.linspace(0.0, 1.0, size)[None, :, None]
        start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        pixels = np.broadcast_to(start + (end - start) * ramp, (size, size, 3))
    elif kind == "text":
        background = tuple(int(v) for v in rng.integers(180, 256, 3))
        image = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(image)
        for row in range(int(rng.integers(3, 9))):
            text = TEXT_LINES[int(rng.integers(len(TEXT_LINES)))]
            ink = tuple(int(v) for v in rng.integers(0, 90, 3))
            draw.text((int(rng.integers(4, 40)), 12 + row * 28), text, fill=ink,
                      font_size=int(rng.integers(12, 26)))  # fmt: skip
        return image
    else:
        raise ValueError(f"unknown synthetic kind {kind!r}; valid: {SYNTHETIC_KINDS}")
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def synthetic_images(count: int, seed: int = 0) -> list[Image.Image]:
    """``count`` synthetic images, the kinds in turn."""
    rng = np.random.default_rng(seed)
    return [synthetic_image(SYNTHETIC_KINDS[i % len(SYNTHETIC_KINDS)], rng) for i in range(count)]


# --- scoring ----------------------------------------------------------------------------


def score_images(
    classifier: Classifier, images: Sequence[Any], stats: OpenSetStats | None
) -> dict[str, np.ndarray]:
    """Every method's unknown score for ``images`` (paths or PIL images), in batches."""
    parts: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    temperature = classifier.open_world.temperature
    for start in range(0, len(images), classifier.batch_size):
        chunk = images[start : start + classifier.batch_size]
        batch = np.stack([classifier.preprocess(x) for x in chunk])
        logits, embeddings = classifier.run_logits(batch)
        for method in METHODS:
            if not method_available(method, stats):
                continue
            parts[method].append(unknown_scores(method, logits, embeddings, temperature, stats))
    return {m: np.concatenate(p) for m, p in parts.items() if p}


def method_available(method: str, stats: OpenSetStats | None) -> bool:
    """Whether a package with ``stats`` (None: no open_set.npz) can compute ``method``."""
    if method not in STATS_METHODS:
        return True
    if stats is None:
        return False
    return method != "msp_knn" or stats.reference_msp is not None


def package_test_rows(
    package: ModelPackage, data_root: str | None, limit: int
) -> tuple[list[Any], Path, Path]:
    """The test-split manifest rows (at most ``limit``) of the dataset the package was
    exported from, the raw directory their paths are relative to, and the prepared
    dataset's directory."""
    import yaml

    from flowerclf.data.datamodule import prepared_raw_dir
    from flowerclf.data.manifest import read_manifest

    config = yaml.safe_load(package.require("config").read_text())
    prepared = Path(data_root or config["data"]["root"]).expanduser() / config["data"]["name"]
    if not (prepared / "manifest.csv").is_file():
        raise UsageError(
            f"the package's dataset is not prepared at {prepared}: pass data.root=<dir holding "
            f"{config['data']['name']}/>"
        )
    rows = [r for r in read_manifest(prepared) if r.split == "test"]
    if not rows:
        raise UsageError(f"{prepared} has no test split")
    return rows[:limit], prepared_raw_dir(prepared), prepared


def _test_paths(
    package: ModelPackage, data_root: str | None, limit: int
) -> tuple[list[Path], Path]:
    """The (readable) test images, and the prepared dataset's directory."""
    rows, raw, prepared = package_test_rows(package, data_root, limit)
    return _readable([raw / r.path for r in rows]), prepared


def _readable(paths: Sequence[Path]) -> list[Path]:
    good = []
    for path in paths:
        try:
            load_rgb(path)
        except ImageDecodeError:
            log.warning("skipping unreadable %s", path)
            continue
        good.append(path)
    return good


def evaluate_ood(
    package_dir: str | Path,
    out: str | Path | None = None,
    *,
    data_root: str | None = None,
    oxford_root: str | Path | None = None,
    max_images: int = DEFAULT_MAX_IMAGES,
    seed: int = 0,
    backend: str = DEFAULT_BACKEND,
) -> dict[str, Any]:
    """Score test images and the OOD groups with every method; write JSON, Markdown, PNG.

    Returns:
        The report (also in ``<out>/ood.json``).
    """
    package = load_package(package_dir)
    classifier = Classifier.load(package.root, backend=backend)
    open_world = classifier.open_world
    if not open_world.thresholds:
        raise UsageError(
            f"{package.root} has no fitted rejection ({open_world.reason}); re-export it"
        )
    stats_path = package.file(OPEN_SET_FILE_KEY)
    stats = OpenSetStats.load(stats_path) if stats_path and stats_path.is_file() else None
    test_paths, prepared = _test_paths(package, data_root, max_images)
    # Default: where `flowerclf data prepare data=oxford102` keeps the raw dataset.
    oxford_root = oxford_root or prepared.parent / "raw" / "oxford102"
    groups, notes = _ood_sets(package, oxford_root, max_images, seed)
    known = Scored("test", score_images(classifier, test_paths, stats), len(test_paths))
    scored = {name: Scored(name, score_images(classifier, images, stats), len(images))
              for name, images in groups.items() if images}  # fmt: skip
    classifier.close()
    report = _report(package, known, scored, open_world.thresholds, open_world.method, notes)
    out_dir = report_dir(package, out, "ood")
    report["plots"] = {"histograms": str(_plot(known, scored, open_world.thresholds,
                                              out_dir / "ood_histograms.png"))}  # fmt: skip
    return write_report(report, out_dir, "ood", render_ood_markdown)


def report_dir(package: ModelPackage, out: str | Path | None, kind: str) -> Path:
    """Where a package report of ``kind`` goes: ``out``, else ``<package>-<kind>`` beside
    the package (created)."""
    out_dir = Path(out) if out else package.root.parent / f"{package.root.name}-{kind}"
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def write_report(
    report: dict[str, Any], out_dir: Path, kind: str, render: Callable[[dict[str, Any]], str]
) -> dict[str, Any]:
    """Write ``report`` as ``<kind>.json`` and its Markdown as ``<kind>.md`` in ``out_dir``
    (both paths recorded in the report), and return it."""
    json_path, md_path = out_dir / f"{kind}.json", out_dir / f"{kind}.md"
    report["report"] = {"json": str(json_path), "markdown": str(md_path)}
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render(report), encoding="utf-8")
    return report


def _ood_sets(
    package: ModelPackage, oxford_root: str | Path | None, max_images: int, seed: int
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    notes: dict[str, Any] = {}
    groups: dict[str, list[Any]] = {}
    if package.descriptor.get("source", {}).get("dataset", "").startswith("oxford102"):
        notes["unseen_species"] = "skipped: an Oxford-102 model knows every Oxford-102 class"
    elif oxford_root is None or not Path(oxford_root).is_dir():
        notes["unseen_species"] = (
            f"skipped: no Oxford-102 dataset at {oxford_root}; pass ood.oxford_root=DIR"
        )
    else:
        paths, excluded = unseen_species_paths(Path(oxford_root), package.classes, max_images,
                                               seed)  # fmt: skip
        groups["unseen_species"] = _readable(paths)
        notes["unseen_species_excluded_classes"] = excluded
    rng = np.random.default_rng(seed)
    photos = bundled_photos()
    groups["non_flower_photos"] = [
        view for path in photos.values() for view in photo_views(load_rgb(path), CROPS_PER_PHOTO,
                                                                 rng)
    ]  # fmt: skip
    notes["non_flower_photos_sources"] = sorted(photos)
    groups["synthetic"] = synthetic_images(min(max_images, 100), seed)
    notes["synthetic_kinds"] = list(SYNTHETIC_KINDS)
    return groups, notes


def _report(
    package: ModelPackage,
    known: Scored,
    scored: dict[str, Scored],
    thresholds: dict[str, float],
    default_method: str | None,
    notes: dict[str, Any],
) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    for method, in_scores in known.scores.items():
        threshold = thresholds.get(method)
        entry: dict[str, Any] = {
            "threshold": threshold,
            "test_kept": None if threshold is None else 1.0 - rejected_share(in_scores, threshold),
            "groups": {},
        }
        for name, group in scored.items():
            entry["groups"][name] = separation(in_scores, group.scores[method], threshold)
        non_flower = [scored[g].scores[method] for g in ("non_flower_photos", "synthetic")
                      if g in scored]  # fmt: skip
        if non_flower:
            entry["groups"]["non_flower"] = separation(
                in_scores, np.concatenate(non_flower), threshold
            )
        methods[method] = entry
    return {
        "package": str(package.root),
        "name": package.name,
        "default_method": default_method,
        "keep": package.descriptor.get("open_world", {}).get("reject", {}).get("keep"),
        "in_distribution": {"split": "test", "count": known.count},
        "groups": {name: {"count": g.count} for name, g in scored.items()},
        "methods": methods,
        "best_method_by_auroc": _best(methods),
        "calibration": package.descriptor.get("open_world", {}).get("calibration"),
        "notes": notes,
    }


def _best(methods: dict[str, Any]) -> dict[str, str]:
    """Per group, the method with the highest AUROC."""
    names = {g for entry in methods.values() for g in entry["groups"]}
    return {
        group: max(
            (m for m in methods if group in methods[m]["groups"]),
            key=lambda m: methods[m]["groups"][group]["auroc"],
        )
        for group in sorted(names)
    }


def render_ood_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables: one row per method and OOD group."""
    lines = [
        f"# Unknown-image rejection: {report['name']}",
        "",
        f"In-distribution: {report['in_distribution']['count']} test images. Default method: "
        f"`{report['default_method']}`; thresholds keep {report['keep']} of the known "
        "validation images. Higher AUROC and lower FPR@95%TPR are better.",
        "",
        "| method | group | images | AUROC | FPR@95%TPR | rejected at threshold | test kept |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for method, entry in report["methods"].items():
        kept = entry["test_kept"]
        for group, row in entry["groups"].items():
            rejected = row.get("rejected")
            lines.append(
                f"| {method} | {group} | {row['count']} | {row['auroc']:.4f} | "
                f"{row['fpr_at_95_tpr']:.4f} | "
                f"{'' if rejected is None else f'{rejected:.1%}'} | "
                f"{'' if kept is None else f'{kept:.1%}'} |"
            )
    best = report["best_method_by_auroc"]
    lines += [
        "",
        "Best method per group (AUROC): " + ", ".join(f"{g}: `{m}`" for g, m in best.items()),
    ]
    calibration = report.get("calibration")
    if calibration:
        lines += ["", f"Calibration (validation split, fitted at export): temperature "
                  f"{calibration['temperature']:.3f}, ECE {calibration['ece_uncalibrated']:.4f} "
                  f"before, {calibration['ece']:.4f} after."]  # fmt: skip
    if report.get("plots"):
        lines += ["", f"![score histograms]({Path(report['plots']['histograms']).name})"]
    return "\n".join(lines) + "\n"


def _plot(
    known: Scored, scored: dict[str, Scored], thresholds: dict[str, float], path: Path
) -> Path:
    """Score histograms, one panel per method: known test images vs each OOD group."""
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede the pyplot import
    import matplotlib.pyplot as plt

    methods = list(known.scores)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.6), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        everything = np.concatenate(
            [known.scores[method], *(g.scores[method] for g in scored.values())]
        )
        low, high = np.percentile(everything, [0.5, 99.5])
        bins = np.linspace(low, high if high > low else low + 1, 40)
        ax.hist(known.scores[method], bins=bins, alpha=0.6, density=True, label="test (known)")
        for group in scored.values():
            ax.hist(group.scores[method].clip(low, high), bins=bins, alpha=0.45, density=True,
                    histtype="stepfilled", label=group.name)  # fmt: skip
        if method in thresholds:
            ax.axvline(thresholds[method], color="black", linestyle="--", label="threshold")
        ax.set_title(method)
        ax.set_xlabel("unknown score (higher = less known)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
