"""How long the CPU fast path's trunk cache takes to build, per runtime (issue 16).

    python scripts/trunk_cache_speed.py --data-root data [--out results/trunk_cache.json]

Runs ``flowerclf train experiment=tf_flowers_fast`` (one epoch, no tracking, a fresh cache
directory each time) with ``trainer.feature_runtime=onnx`` (the runtime before issue 16)
and with ``auto`` (the default now), and reads each run's ``feature_cache_s``: decoding,
augmenting and running the frozen trunk over every split (train in ``--views`` views).
Writes the figures, the speed-up and the hardware as JSON (the README's speed section
shows them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from flowerclf.core.hardware import cpu_description
from flowerclf.models.runners import resolve_runtime


def build_time(runtime: str, data_root: str, views: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            sys.executable, "-m", "flowerclf", "-q", "train", "experiment=tf_flowers_fast",
            f"data.root={data_root}", "logger=none", "trainer.max_epochs=1",
            f"trainer.cache_views={views}", f"trainer.feature_runtime={runtime}",
            f"paths.cache_dir={tmp}/cache", f"paths.output_dir={tmp}/outputs", *extra, "--json",
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-3000:])
            raise SystemExit(f"training with feature_runtime={runtime} failed")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"seconds": round(float(result["metrics"]["feature_cache_s"]), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="where tf_flowers is prepared")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    parser.add_argument("overrides", nargs="*", help="more training overrides")
    args = parser.parse_args()
    onnx = build_time("onnx", args.data_root, args.views, args.overrides)
    auto = build_time("auto", args.data_root, args.views, args.overrides)
    report = {
        "hardware": cpu_description(),
        "views": args.views,
        "images": "tf_flowers, every split (train in each view)",
        "onnx_s": onnx["seconds"],
        "auto_s": auto["seconds"],
        "auto_runtime": resolve_runtime("auto"),
        "speedup": round(onnx["seconds"] / max(auto["seconds"], 1e-9), 2),
        "note": "one run each; other work on the machine adds noise",
        "command": "python scripts/trunk_cache_speed.py --data-root DATA",
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
