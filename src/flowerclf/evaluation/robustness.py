"""``flowerclf evaluate <package> --robustness``: test accuracy under common corruptions.

Each corruption is applied to the decoded test photo before the package's own
preprocessing, at 2-3 severities: JPEG re-encoding, Gaussian blur, Gaussian noise,
brightness and contrast, rotation by 90/180 degrees, and downscaling to 64 px then back up.
Reports accuracy, the drop from clean in points, and the share of images still called
known (unknown-image rejection) per corruption, as ``robustness.json``, ``robustness.md``
and ``robustness.png``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from flowerclf.core.imaging import load_rgb
from flowerclf.core.package_format import load_package
from flowerclf.evaluation.ood import package_test_rows, report_dir, write_report
from flowerclf.inference.backends import DEFAULT_BACKEND
from flowerclf.inference.classifier import Classifier

Corruption = Callable[[Image.Image], Image.Image]


def jpeg(quality: int) -> Corruption:
    def apply(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    return apply


def blur(radius: float) -> Corruption:
    return lambda image: image.filter(ImageFilter.GaussianBlur(radius))


def noise(sigma: float, seed: int = 0) -> Corruption:
    def apply(image: Image.Image) -> Image.Image:
        rng = np.random.default_rng(seed)
        pixels = np.asarray(image, np.float32) + rng.normal(0.0, sigma, (*image.size[::-1], 3))
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    return apply


def brightness(factor: float) -> Corruption:
    return lambda image: ImageEnhance.Brightness(image).enhance(factor)


def contrast(factor: float) -> Corruption:
    return lambda image: ImageEnhance.Contrast(image).enhance(factor)


def rotate(degrees: int) -> Corruption:
    return lambda image: image.rotate(degrees, expand=True)


def downscale(side: int) -> Corruption:
    def apply(image: Image.Image) -> Image.Image:
        scale = side / max(image.size)
        small = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.BILINEAR,
        )
        return small.resize(image.size, Image.Resampling.BILINEAR)

    return apply


def corruptions() -> dict[str, Corruption]:
    """Name -> corruption, mild to severe within each kind."""
    return {
        "jpeg_q70": jpeg(70), "jpeg_q50": jpeg(50), "jpeg_q30": jpeg(30),
        "blur_r1": blur(1), "blur_r2": blur(2), "blur_r3": blur(3),
        "noise_s10": noise(10), "noise_s25": noise(25), "noise_s50": noise(50),
        "brightness_0.5": brightness(0.5), "brightness_1.5": brightness(1.5),
        "contrast_0.5": contrast(0.5), "contrast_1.5": contrast(1.5),
        "rotate_90": rotate(90), "rotate_180": rotate(180),
        "downscale_64": downscale(64), "downscale_32": downscale(32),
    }  # fmt: skip


def _score(
    classifier: Classifier, images: Sequence[Image.Image], labels: np.ndarray
) -> dict[str, float]:
    predictions = classifier.predict(list(images))
    predicted = np.asarray([classifier.classes.index(p.predicted_class) for p in predictions])
    return {
        "accuracy": float((predicted == labels).mean()),
        "known": float(np.mean([p.is_known for p in predictions])),
    }


def evaluate_robustness(
    package_dir: str | Path,
    out: str | Path | None = None,
    *,
    data_root: str | None = None,
    max_images: int = 1000,
    backend: str = DEFAULT_BACKEND,
) -> dict[str, Any]:
    """Accuracy of the package on its test split, clean and under each corruption.

    Images are processed in chunks of the classifier's batch size, so memory stays bounded
    by one chunk of decoded photos per corruption.
    """
    package = load_package(package_dir)
    rows, raw, _ = package_test_rows(package, data_root, max_images)
    labels = np.asarray([r.label for r in rows])
    table: dict[str, dict[str, float]] = {}
    with Classifier.load(package.root, backend=backend) as classifier:
        names = {"clean": (lambda image: image), **corruptions()}
        totals = {name: {"accuracy": 0.0, "known": 0.0} for name in names}
        step = classifier.batch_size
        for start in range(0, len(rows), step):
            photos = [load_rgb(raw / r.path) for r in rows[start : start + step]]
            chunk_labels = labels[start : start + step]
            for name, corrupt in names.items():
                scores = _score(classifier, [corrupt(p) for p in photos], chunk_labels)
                for key, value in scores.items():
                    totals[name][key] += value * len(photos)
    clean = totals["clean"]["accuracy"] / len(rows)
    for name, sums in totals.items():
        accuracy = sums["accuracy"] / len(rows)
        table[name] = {
            "accuracy": accuracy,
            "drop_points": 100 * (clean - accuracy),
            "known": sums["known"] / len(rows),
        }
    report: dict[str, Any] = {"package": str(package.root), "name": package.name,
                              "split": "test", "count": len(rows), "results": table}  # fmt: skip
    out_dir = report_dir(package, out, "robustness")
    report["plots"] = {"accuracy": str(_plot(table, out_dir / "robustness.png"))}
    return write_report(report, out_dir, "robustness", render_robustness_markdown)


def render_robustness_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Robustness: {report['name']}",
        "",
        f"Accuracy on {report['count']} {report['split']} images, clean and corrupted; "
        "drop in points from clean; share still called known (unknown-image rejection).",
        "",
        "| corruption | accuracy | drop (points) | known |",
        "|---|---:|---:|---:|",
    ]
    for name, row in report["results"].items():
        lines.append(
            f"| {name} | {row['accuracy']:.4f} | {row['drop_points']:.1f} | {row['known']:.1%} |"
        )
    if report.get("plots"):
        lines += ["", f"![accuracy under corruptions]({Path(report['plots']['accuracy']).name})"]
    return "\n".join(lines) + "\n"


def _plot(table: dict[str, dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede the pyplot import
    import matplotlib.pyplot as plt

    names = list(table)
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(names, [table[n]["accuracy"] for n in names], color="tab:blue", label="accuracy")
    ax.plot(names, [table[n]["known"] for n in names], "o", color="tab:orange",
            label="called known")  # fmt: skip
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of test images")
    ax.tick_params(axis="x", rotation=60)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
