"""What an ensemble package costs at inference against a single-model package.

    python scripts/ensemble_cost.py [--best models/tf_flowers_best] [--single models/tf_flowers]
        [--out results/ensemble_cost.json]

Runs `flowerclf benchmark --json` on both packages, one after the other on the same
machine and images (the single model's dataset), with ONNX Runtime fp32 and the `auto`
backend, and stores both reports, the ratios and each package's ONNX parity check in
``--out`` (results/ensemble_cost.json: the three-backbone tf_flowers ensemble;
results/ensemble_cost-oxford102.json: oxford102_best's three members); `make results`
renders them on the results page.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPO / "results" / "ensemble_cost.json"
RUNTIMES = "onnx_fp32,auto"


def benchmark(model: Path, num_images: int) -> dict[str, Any]:
    argv = ["flowerclf", "-q", "benchmark", "--model", str(model), "--json",
            "--runtimes", RUNTIMES, "--num-images", str(num_images)]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, check=False, cwd=REPO
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"benchmark of {model} failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parity(model: Path) -> dict[str, Any]:
    descriptor = json.loads((model / "flowerclf-model.json").read_text())
    return descriptor.get("checks", {}).get("onnx_parity", {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--best", type=Path, default=Path("models/tf_flowers_best"))
    parser.add_argument("--single", type=Path, default=Path("models/tf_flowers"))
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    args = parser.parse_args()
    reports = {name: benchmark(path, args.num_images)
               for name, path in (("single", args.single), ("best", args.best))}  # fmt: skip

    def ratio(runtime: str, key: str) -> float:
        return round(reports["best"][runtime][key] / reports["single"][runtime][key], 2)

    result = {
        "command": "python scripts/ensemble_cost.py "
        f"--best {args.best} --single {args.single} --num-images {args.num_images}"
        + ("" if args.out == RESULTS_FILE else f" --out {args.out}"),
        "packages": {"single": str(args.single), "best": str(args.best)},
        "parity": {"single": parity(args.single), "best": parity(args.best)},
        "ratios": {
            f"{runtime}_{key}": ratio(runtime, key)
            for runtime in RUNTIMES.split(",") for key in ("throughput_ips", "p50_ms")
        },
        "reports": reports,
    }  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"ratios": result["ratios"], "parity_passed": {
        name: check.get("passed") for name, check in result["parity"].items()}}))  # fmt: skip


if __name__ == "__main__":
    main()
