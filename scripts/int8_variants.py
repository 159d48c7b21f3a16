"""Measure the int8 quantisation choices of `flowerclf export` on a package's test split.

    python scripts/int8_variants.py --model models/tf_flowers [--data data/tf_flowers]

Quantises the package's fp32 ONNX model four ways, calibrated on the same training images
as the export (256, seeded), and compares each with fp32 on the dataset's test split:

- ``static_full_range``: static QDQ, 8-bit weights, every convolution and head quantised;
- ``static_reduce_range``: the same with 7-bit weights (``reduce_range``);
- ``static_default``: reduce_range + stem, last convolution and heads kept fp32 (the export);
- ``dynamic``: onnxruntime dynamic quantisation.

Prints one JSON object (accuracy, drop in points, top-1 agreement, images/s of each model)
and writes it to results/int8_variants.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from flowerclf.core.hardware import cpu_description
from flowerclf.core.package_format import load_package
from flowerclf.data.datamodule import prepared_raw_dir
from flowerclf.data.manifest import manifest_sha256, read_manifest
from flowerclf.export.dataset_images import preprocess_rows
from flowerclf.export.quantize import calibration_indices, compare_int8, quantize_int8

RESULTS_FILE = Path(__file__).resolve().parents[1] / "results" / "int8_variants.json"
VARIANTS = {
    "static_full_range": {"method": "static", "reduce_range": False, "keep_fp32_edges": False},
    "static_reduce_range": {"method": "static", "reduce_range": True, "keep_fp32_edges": False},
    "static_default": {"method": "static", "reduce_range": True, "keep_fp32_edges": True},
    "dynamic": {"method": "dynamic"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a `flowerclf export` directory")
    parser.add_argument("--data", help="its prepared dataset (default: from the package)")
    parser.add_argument("--calibration-images", type=int, default=256)
    args = parser.parse_args()

    package = load_package(args.model)
    source = package.descriptor["source"]
    data = Path(args.data or Path(source["image_root"]).parents[1] / source["dataset"])
    if manifest_sha256(data) != source["manifest_sha256"]:
        raise SystemExit(f"{data} is not the split the package was trained on (manifest differs)")
    rows = read_manifest(data)
    raw_dir = prepared_raw_dir(data)
    train_rows = [r for r in rows if r.split in source["train_splits"]]
    test_rows = [r for r in rows if r.split == "test"]
    chosen = calibration_indices(len(train_rows), args.calibration_images)
    spec = package.spec
    calibration = preprocess_rows([train_rows[i] for i in chosen], raw_dir, spec, "calibration")
    test_images = preprocess_rows(test_rows, raw_dir, spec, "test")
    labels = np.asarray([r.label for r in test_rows])

    report: dict[str, object] = {
        "model": package.name,
        "version": package.version,
        "hardware": cpu_description(),
        "test_images": len(test_rows),
        "calibration_images": len(chosen),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in VARIANTS.items():
            print(f"== {name}", file=sys.stderr, flush=True)
            out = Path(tmp) / f"{name}.onnx"
            quantize_int8(package.require("onnx"), out, calibration, **options)  # type: ignore[arg-type]
            result = compare_int8(
                package.require("onnx"), out, [test_images], labels, str(options["method"]),
                len(chosen),
            )  # fmt: skip
            report[name] = result.to_dict()
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
