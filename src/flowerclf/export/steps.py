"""The export, step by step: each step writes its part of the package and says what it wrote.

:data:`EXPORT_STEPS` runs in order; :func:`planned_steps` keeps those the options ask
for. The ``onnx`` step comes before every step that reads the ONNX model, and ``mlflow``
last: it loads the package written so far.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from safetensors.torch import save_file

from flowerclf.core.errors import ExportError, TensorRTUnavailableError
from flowerclf.core.hardware import cpu_features
from flowerclf.core.open_set import OPEN_SET_FILE_KEY, OPEN_WORLD_KEY
from flowerclf.core.package_format import (
    CONFIG_FILE,
    EMBEDDINGS_FILE,
    GALLERY_DIR,
    METRICS_FILE,
    MLFLOW_DIR,
    ONNX_INT8_FILE,
    OPENVINO_INT8_FILE,
    OPENVINO_INT8_WEIGHTS_FILE,
    OUTPUT_NAMES,
    TENSORRT_FILE,
    TRITON_DIR,
    WEIGHTS_FILE,
    load_package,
)
from flowerclf.export.context import IMAGE_CHUNK, ExportContext, ExportStep, StepResult
from flowerclf.export.dataset_images import iter_preprocessed, preprocess_rows
from flowerclf.export.mlflow_model import log_pyfunc, save_pyfunc
from flowerclf.export.onnx_model import (
    PackageGraph,
    check_onnx_model,
    check_parity,
    cpu_session,
    run_in_batches,
)
from flowerclf.export.open_world import write_open_world
from flowerclf.export.openvino_int8 import (
    compare_openvino,
    openvino_int8_unavailable,
    quantize_openvino_int8,
)
from flowerclf.export.options import ExportOptions
from flowerclf.export.quantize import calibration_indices, compare_int8, quantize_int8
from flowerclf.export.tensorrt import build_engine
from flowerclf.export.triton import write_triton_repository
from flowerclf.models.runners import export_onnx

TENSORRT_OFF_REASON = "disabled (--tensorrt off)"


def write_weights(context: ExportContext) -> StepResult:
    """The network's weights as safetensors (what the ``torch`` backend loads)."""
    state = {k: v.detach().contiguous() for k, v in context.net.state_dict().items()}
    save_file(state, str(context.staging / WEIGHTS_FILE), metadata={"format": "pt"})
    return StepResult(files={"weights": WEIGHTS_FILE})


def write_onnx(context: ExportContext) -> StepResult:
    """The fp32 ONNX model (``images`` -> probabilities, logits, embeddings), checked."""
    context.say("exporting ONNX (with onnx.checker full check)")
    graph = PackageGraph(context.net).eval()
    export_onnx(graph, context.onnx_path, context.spec.input_size, OUTPUT_NAMES)
    check_onnx_model(context.onnx_path)
    return StepResult(files={"onnx": context.onnx_path.name})


def check_onnx_parity(context: ExportContext) -> StepResult:
    """ONNX Runtime vs PyTorch on real evaluation images; a disagreement stops the export.

    Raises:
        ExportError: top-1 answers differ or probabilities differ beyond tolerance.
    """
    images = context.eval_images(context.options.parity_images)
    parity = check_parity(context.net, context.onnx_path, images)
    split = context.eval_split
    context.say(
        f"ONNX vs PyTorch on {parity.num_images} {split} images: top-1 agreement "
        f"{parity.top1_agreement:.3f}, max |dp| {parity.max_abs_prob_diff:.2e}"
    )
    if not parity.passed:
        raise ExportError(
            f"ONNX model disagrees with PyTorch: top-1 agreement {parity.top1_agreement:.3f}, "
            f"max probability difference {parity.max_abs_prob_diff:.2e} > {parity.atol}"
        )
    return StepResult(checks={"onnx_parity": parity.to_dict() | {"split": split}})


def write_similarity_index(context: ExportContext) -> StepResult:
    """Embeddings of every training image (and, with ``gallery``, their thumbnails).

    ``Classifier.similar`` searches these; images are decoded and embedded a chunk at a
    time, so memory does not grow with the dataset.
    """
    rows = context.train_rows
    files: dict[str, str] = {}
    gallery: Path | None = None
    if context.options.gallery:
        gallery = context.staging / GALLERY_DIR
        gallery.mkdir()
        files["gallery"] = GALLERY_DIR
    session = cpu_session(context.onnx_path)
    chunks = iter_preprocessed(
        rows, context.raw_dir, context.spec, "embed training images", IMAGE_CHUNK, gallery
    )
    embedded = [run_in_batches(session, images, ["embeddings"])[0] for images in chunks]
    embeddings = (
        np.concatenate(embedded) if embedded else np.zeros((0, context.embedding_dim))
    ).astype(np.float32)
    np.savez_compressed(
        context.staging / EMBEDDINGS_FILE,
        embeddings=embeddings,
        ids=np.asarray([r.id for r in rows], dtype=np.int64),
        labels=np.asarray([r.label for r in rows], dtype=np.int64),
        splits=np.asarray([r.split for r in rows]),
        paths=np.asarray([r.path for r in rows]),
        classes=np.asarray(context.classes),
    )
    files["embeddings"] = EMBEDDINGS_FILE
    return StepResult(files=files)


def _calibration_images(context: ExportContext) -> np.ndarray:
    """The seeded sample of preprocessed training images that calibrates every int8 model."""
    options, rows = context.options, context.train_rows
    chosen = calibration_indices(len(rows), options.calibration_images, options.seed)
    return preprocess_rows(
        [rows[i] for i in chosen], context.raw_dir, context.spec, "decode calibration images"
    )


def write_int8(context: ExportContext) -> StepResult:
    """An int8 copy of the ONNX model, compared with fp32 on the evaluation images."""
    method = context.options.int8
    calibration = None
    if method == "static":  # dynamic quantisation has no activation ranges to calibrate
        calibration = _calibration_images(context)
        context.say(f"int8 (static) quantisation, calibrated on {len(calibration)} training images")
    else:
        context.say(f"int8 ({method}) quantisation")
    calibrated_on = 0 if calibration is None else len(calibration)
    int8_path = context.staging / ONNX_INT8_FILE
    quantize_int8(context.onnx_path, int8_path, calibration, method)
    del calibration  # the evaluation images are next
    report = compare_int8(
        context.onnx_path, int8_path, context.iter_eval_images(), context.eval_labels, method,
        calibrated_on,
    )  # fmt: skip
    split = context.eval_split
    context.say(
        f"int8 on {report.num_images} {split} images: accuracy {report.int8_accuracy:.4f}"
        f" vs fp32 {report.fp32_accuracy:.4f}, {report.speedup:.2f}x fp32 throughput"
    )
    return StepResult(
        files={"onnx_int8": ONNX_INT8_FILE}, checks={"int8": report.to_dict() | {"split": split}}
    )


def write_openvino(context: ExportContext) -> StepResult:
    """The OpenVINO int8 model (NNCF) and bf16's accuracy, each against OpenVINO fp32 on the
    evaluation images; where OpenVINO or NNCF is missing (or, for bf16, the CPU has no bf16
    units) the checks record why (an error only when asked for with ``--openvino on``)."""
    reason = openvino_int8_unavailable()
    if reason is not None:
        if context.options.openvino == "on":
            raise ExportError(f"--openvino on: {reason}")
        not_built = {"built": False, "reason": reason}
        return StepResult(checks={"openvino_int8": not_built, "openvino_bf16": not_built})
    int8 = _openvino_int8(context)
    return StepResult(
        files=int8.files, checks=int8.checks | {"openvino_bf16": _openvino_bf16(context)}
    )


def _openvino_int8(context: ExportContext) -> StepResult:
    calibration = _calibration_images(context)
    context.say(f"OpenVINO int8 (NNCF), calibrated on {len(calibration)} training images")
    xml = quantize_openvino_int8(
        context.onnx_path, context.staging / OPENVINO_INT8_FILE, calibration
    )
    calibrated_on = len(calibration)
    del calibration  # the evaluation images are next
    report = compare_openvino(
        context.onnx_path, context.iter_eval_images(), context.eval_labels, int8_xml=xml,
        calibration_images=calibrated_on,
    )  # fmt: skip
    split = context.eval_split
    context.say(
        f"OpenVINO int8 on {report.num_images} {split} images: accuracy "
        f"{report.int8_accuracy:.4f} vs fp32 {report.fp32_accuracy:.4f}, "
        f"{report.speedup:.2f}x fp32 throughput"
    )
    return StepResult(
        files={
            "openvino_int8": OPENVINO_INT8_FILE,
            "openvino_int8_weights": OPENVINO_INT8_WEIGHTS_FILE,
        },
        checks={"openvino_int8": report.to_dict() | {"built": True, "split": split}},
    )


def _openvino_bf16(context: ExportContext) -> dict[str, Any]:
    features = cpu_features()
    if not (features["bf16"] or features["amx"]):
        return {"built": False, "reason": "this CPU has no bf16 units (AVX512-BF16 or AMX)"}
    report = compare_openvino(context.onnx_path, context.iter_eval_images(), context.eval_labels)
    split = context.eval_split
    context.say(
        f"OpenVINO bf16 on {report.num_images} {split} images: accuracy "
        f"{report.int8_accuracy:.4f} vs fp32 {report.fp32_accuracy:.4f}, "
        f"{report.speedup:.2f}x fp32 throughput"
    )
    return report.to_dict() | {"built": True, "split": split}


def write_triton(context: ExportContext) -> StepResult:
    """A Triton model repository: preprocessing step, ONNX model, rejection step and their
    ensemble, returning the package's calibrated probabilities (its ``open_world``
    temperature) and, where the package has a rejection method, ``unknown_score`` and
    ``is_known`` as every other runtime answers them."""
    descriptor = load_package(context.staging, verify=False).descriptor
    open_world = descriptor.get(OPEN_WORLD_KEY, {})
    stats = descriptor.get("files", {}).get(OPEN_SET_FILE_KEY)
    write_triton_repository(
        context.staging / TRITON_DIR,
        context.onnx_path,
        context.classes,
        context.spec,
        context.embedding_dim,
        temperature=float(open_world.get("temperature", 1.0)),
        open_world=open_world,
        open_set_stats=context.staging / stats if stats else None,
    )
    return StepResult(files={"triton": TRITON_DIR})


def write_tensorrt(context: ExportContext) -> StepResult:
    """A TensorRT engine where possible; the ``tensorrt`` check says what happened.

    Raises:
        TensorRTUnavailableError: ``fp32``/``fp16`` asked for, but no GPU or TensorRT.
    """
    mode = context.options.tensorrt
    if mode == "off":
        return StepResult(checks={"tensorrt": {"built": False, "reason": TENSORRT_OFF_REASON}})
    try:
        build_engine(
            context.onnx_path, context.staging / TENSORRT_FILE, context.spec.input_size,
            fp16=mode == "fp16",
        )  # fmt: skip
    except TensorRTUnavailableError as exc:
        if mode != "auto":  # explicitly asked for: fail loudly
            raise
        context.say(f"{exc}; skipping the TensorRT engine")
        return StepResult(checks={"tensorrt": {"built": False, "reason": str(exc)}})
    return StepResult(
        files={"tensorrt": TENSORRT_FILE},
        checks={"tensorrt": {"built": True, "fp16": mode == "fp16"}},
    )


def write_training_config(context: ExportContext) -> StepResult:
    """The run's resolved training config, as YAML."""
    (context.staging / CONFIG_FILE).write_text(yaml.safe_dump(context.config, sort_keys=False))
    return StepResult(files={"config": CONFIG_FILE})


def write_training_metrics(context: ExportContext) -> StepResult:
    """The run's final metrics (empty when the run directory is gone)."""
    metrics = _run_metrics(context.settings.run.dir, context.run.checkpoint)
    (context.staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return StepResult(files={"metrics": METRICS_FILE}, entries={"metrics": metrics})


def _run_metrics(run_dir: str | None, checkpoint: Path) -> dict[str, float]:
    for candidate in (Path(run_dir) if run_dir else None, checkpoint.parent.parent):
        if candidate is not None and (candidate / METRICS_FILE).is_file():
            return dict(json.loads((candidate / METRICS_FILE).read_text()))
    return {}


def write_mlflow_model(context: ExportContext) -> StepResult:
    """The package as an MLflow pyfunc model, saved in it and logged to the training run."""
    package = load_package(context.staging)
    example_rows = context.datamodule.split_rows("test") or context.datamodule.rows
    example = (context.raw_dir / example_rows[0].path).read_bytes()
    save_pyfunc(package, context.staging / MLFLOW_DIR, example)
    info: dict[str, Any] = {"local": MLFLOW_DIR}
    run_id, tracking_uri = context.run.run_id, context.tracking_uri
    if run_id and tracking_uri and context.run_tags is None:
        context.say(f"run {run_id} is not in {tracking_uri}: pyfunc saved in the package only")
        info["logged"] = f"run {run_id} not found in {tracking_uri}; saved locally only"
    elif run_id and tracking_uri:
        name = context.options.register_name or f"flowerclf-{context.package_name}"
        context.say(f"logging the pyfunc model to run {run_id} and registering it as {name}")
        info |= log_pyfunc(package, run_id, tracking_uri, name, example)
    else:
        info["logged"] = "no MLflow run known for this checkpoint; saved locally only"
    return StepResult(files={"mlflow": MLFLOW_DIR}, entries={"mlflow": info})


def _int8_wanted(options: ExportOptions) -> bool:
    return options.int8 != "none"


EXPORT_STEPS: tuple[ExportStep, ...] = (
    ExportStep("weights", write_weights),
    ExportStep("onnx", write_onnx),
    ExportStep("onnx_parity", check_onnx_parity),
    ExportStep("embeddings", write_similarity_index),
    ExportStep("open_world", write_open_world),  # issue 13: reads the embeddings
    ExportStep("int8", write_int8, wanted=_int8_wanted),
    ExportStep("openvino", write_openvino, wanted=lambda options: options.openvino != "off"),
    ExportStep(
        "triton", write_triton, wanted=lambda options: options.triton, reads_package=True
    ),  # reads the temperature the open_world step fitted
    ExportStep("tensorrt", write_tensorrt),  # always: its check records why there is no engine
    ExportStep("config", write_training_config),
    ExportStep("metrics", write_training_metrics),
    ExportStep("mlflow", write_mlflow_model, wanted=lambda o: o.mlflow, reads_package=True),
)


def planned_steps(options: ExportOptions) -> list[ExportStep]:
    """The steps these options ask for, in the order they run."""
    return [step for step in EXPORT_STEPS if step.wanted(options)]
