"""Does decoding JPEGs at reduced DCT scale change what the model answers? And how much
faster is it?

    python scripts/decode_agreement.py --model models/tf_flowers \\
        --manifest data/tf_flowers/manifest.csv [--split test] [--scale 4] [--json]

Each photo of the split is enlarged ``--scale`` times (Lanczos) and re-encoded as a JPEG
(quality 92), the size of a phone photo: the dataset's own photos are smaller than twice the
resize size, so the reduced decode never applies to them. Each is then preprocessed three
ways: full decode; DCT scaling down to 2x the resize size (the rule before issue 16); DCT
scaling down to the resize size (``DCT_REDUCING_GAP``, the rule now). The model's top-1
agreement with the full decode, the largest probability change and the decode + preprocess
time per image are printed. Keep the rule only if agreement >= 99.5 %.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import flowerclf.core.imaging as imaging
from flowerclf import Classifier
from flowerclf.core.hardware import cpu_description
from flowerclf.core.preprocess import preprocess_eval

QUALITY = 92
RULES = {"full": None, "dct_gap_2": 2.0, "dct_gap_1": 1.0}


def enlarged_jpegs(root: Path, rows: list[dict[str, str]], scale: int) -> list[bytes]:
    out = []
    for row in rows:
        with Image.open(root / row["path"]) as image:
            image = image.convert("RGB")
            big = image.resize(
                (image.width * scale, image.height * scale), Image.Resampling.LANCZOS
            )
        buffer = io.BytesIO()
        big.save(buffer, "JPEG", quality=QUALITY)
        out.append(buffer.getvalue())
    return out


def preprocess_all(
    data: list[bytes], classifier: Classifier, gap: float | None
) -> tuple[np.ndarray, float]:
    spec = classifier.spec
    target = None if gap is None else spec.resize_size
    previous = imaging.DCT_REDUCING_GAP
    imaging.DCT_REDUCING_GAP = gap or previous
    try:
        started = time.perf_counter()
        arrays = [preprocess_eval(imaging.decode_rgb(d, target_short_side=target).image, spec)
                  for d in data]  # fmt: skip
        seconds = time.perf_counter() - started
    finally:
        imaging.DCT_REDUCING_GAP = previous
    return np.stack(arrays), seconds / len(data) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--manifest", required=True, type=Path, help="prepared manifest.csv")
    parser.add_argument("--images", type=Path, help="raw image root (default: the package's)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    classifier = Classifier.load(args.model, backend="onnx")
    root = args.images or Path(classifier.package.descriptor["source"]["image_root"])
    with args.manifest.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == args.split][: args.limit]
    labels = np.array([classifier.classes.index(r["class_name"]) for r in rows])
    data = enlarged_jpegs(root, rows, args.scale)
    report: dict[str, Any] = {
        "hardware": cpu_description(), "model": classifier.package.name, "split": args.split,
        "images": len(rows), "scale": args.scale, "jpeg_quality": QUALITY,
        "mean_megapixels": round(float(np.mean([
            np.prod(Image.open(io.BytesIO(d)).size) for d in data])) / 1e6, 2),
    }  # fmt: skip
    reference = None
    for name, gap in RULES.items():
        arrays, ms = preprocess_all(data, classifier, gap)
        probabilities = np.concatenate(
            [
                classifier.run_arrays(arrays[i : i + 32]).probabilities
                for i in range(0, len(arrays), 32)
            ]
        )
        if reference is None:
            reference = probabilities
        report[name] = {
            "decode_preprocess_ms": round(ms, 2),
            "accuracy": round(float((probabilities.argmax(1) == labels).mean()), 4),
            "top1_agreement_vs_full": round(
                float((probabilities.argmax(1) == reference.argmax(1)).mean()), 4
            ),
            "max_prob_diff_vs_full": round(float(np.abs(probabilities - reference).max()), 4),
            "mean_prob_diff_vs_full": round(float(np.abs(probabilities - reference).mean()), 5),
        }
    report["speedup_gap_1_vs_full"] = round(
        report["full"]["decode_preprocess_ms"] / report["dct_gap_1"]["decode_preprocess_ms"], 2
    )
    report["speedup_gap_1_vs_gap_2"] = round(
        report["dct_gap_2"]["decode_preprocess_ms"] / report["dct_gap_1"]["decode_preprocess_ms"], 2
    )
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
