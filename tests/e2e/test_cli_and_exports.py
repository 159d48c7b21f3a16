"""CLI contracts (export, predict, benchmark) and the Triton, TensorRT and MLflow exports."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowerclf import Classifier
from flowerclf.cli.main import main
from tests.helpers.packages import TrainedPackage
from tests.helpers.server import free_port, stop_process, wait_for_http

pytestmark = pytest.mark.slow


# --- predict ---------------------------------------------------------------------------


def test_predict_one_image_prints_one_json_object(
    model_package: TrainedPackage, capsys: pytest.CaptureFixture[str]
):
    image = sorted(model_package.images.rglob("*.jpg"))[0]
    assert main(["predict", str(image), "--model", str(model_package.package)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    keys = {"predicted_class", "confidence", "all_predictions", "is_known", "unknown_score"}
    # An unknown image also gets the plain-words verdict.
    assert set(result) - {"verdict"} == keys and isinstance(result["is_known"], bool)
    expected = Classifier.load(model_package.package).predict(image)
    assert result["predicted_class"] == expected.predicted_class
    assert result["confidence"] == pytest.approx(expected.confidence, abs=1e-6)


def test_predict_folder_prints_json_lines_and_reports_bad_files_without_traceback(
    model_package: TrainedPackage, tmp_path: Path
):
    folder = tmp_path / "mixed"
    shutil.copytree(model_package.images / "a", folder)
    good = sorted(folder.glob("*.jpg"))
    (folder / "corrupt.jpg").write_bytes(good[0].read_bytes()[:200])
    (folder / "empty.png").write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "flowerclf", "predict", str(folder), "--model",
         str(model_package.package), "--top-k", "2", "--backend", "torch"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    records = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert len(records) == len(good) + 2
    errors = {Path(r["path"]).name: r["error"] for r in records if "error" in r}
    assert set(errors) == {"corrupt.jpg", "empty.png"}
    assert "empty" in errors["empty.png"]
    ok = [r for r in records if "error" not in r]
    assert all(len(r["top_k"]) == 2 and Path(r["path"]).exists() for r in ok)
    assert "2 of" in proc.stderr


def test_predict_glob_and_missing_model_message(
    model_package: TrainedPackage, capsys: pytest.CaptureFixture[str]
):
    pattern = str(model_package.images / "b" / "img_00*.jpg")
    assert main(["predict", pattern, "--model", str(model_package.package)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 10
    assert main(["predict", pattern, "--model", str(model_package.root / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err


# --- export ----------------------------------------------------------------------------


def test_export_refuses_to_overwrite_and_explicit_tensorrt_fails_clearly_without_gpu(
    model_package: TrainedPackage, capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    assert main(["export", str(model_package.checkpoint), "--out",
                 str(model_package.package)]) == 1  # fmt: skip
    assert "--force" in capsys.readouterr().err
    from flowerclf.models.torch_backends import tensorrt_available

    if tensorrt_available()[0]:
        pytest.skip("TensorRT is available here: the GPU test covers it")
    out = tmp_path / "trt"
    code = main(["export", str(model_package.checkpoint), "--out", str(out), "--tensorrt",
                 "fp16", "--int8", "none", "--no-mlflow", "--no-triton", "--no-gallery",
                 f"data.root={model_package.root / 'data'}"])  # fmt: skip
    assert code == 1
    assert "TensorRT export unavailable" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".trt.partial-*"))  # nothing left over


@pytest.mark.gpu
def test_tensorrt_engine_matches_onnx(model_package: TrainedPackage, tmp_path: Path):
    from flowerclf.models.torch_backends import tensorrt_available

    available, why = tensorrt_available()
    if not available:
        pytest.skip(why)
    out = tmp_path / "trt"
    data_root = f"data.root={model_package.root / 'data'}"
    code = main(["export", str(model_package.checkpoint), "--out", str(out), "--tensorrt", "fp32",
                 "--no-mlflow", data_root])  # fmt: skip
    assert code == 0
    paths = sorted(model_package.images.rglob("*.jpg"))[:16]
    trt = Classifier.load(out, backend="tensorrt").predict_proba(paths)
    ref = Classifier.load(out, backend="onnx").predict_proba(paths)
    assert (trt.argmax(1) == ref.argmax(1)).all() and np.abs(trt - ref).max() < 1e-3


# --- Triton ----------------------------------------------------------------------------


def parse_pbtxt(text: str) -> dict[str, list[Any]]:
    """A small protobuf text-format parser: every field maps to a list of values."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,]+', text)
    position = 0

    def value(token: str) -> Any:
        if token.startswith('"'):
            return token[1:-1]
        try:
            return int(token)
        except ValueError:
            return token

    def message(end: str | None) -> dict[str, list[Any]]:
        nonlocal position
        fields: dict[str, list[Any]] = {}
        while position < len(tokens) and tokens[position] != end:
            name = tokens[position]
            position += 1
            if tokens[position] == ":":
                position += 1
            token = tokens[position]
            position += 1
            if token == "{":
                fields.setdefault(name, []).append(message("}"))
                position += 1
            elif token == "[":
                while tokens[position] != "]":
                    if tokens[position] == ",":
                        position += 1
                        continue
                    if tokens[position] == "{":
                        position += 1
                        fields.setdefault(name, []).append(message("}"))
                        position += 1
                    else:
                        fields.setdefault(name, []).append(value(tokens[position]))
                        position += 1
                position += 1
            else:
                fields.setdefault(name, []).append(value(token))
        return fields

    return message(None)


def test_triton_repository_matches_the_onnx_model(model_package: TrainedPackage):
    import onnx

    repo = model_package.package / "triton"
    descriptor = json.loads((model_package.package / "flowerclf-model.json").read_text())
    onnx_dir = repo / "flowerclf_onnx"
    config = parse_pbtxt((onnx_dir / "config.pbtxt").read_text())
    assert config["name"] == ["flowerclf_onnx"] and config["backend"] == ["onnxruntime"]
    assert config["max_batch_size"][0] > 0 and "dynamic_batching" in config
    model = onnx.load(str(onnx_dir / "1" / "model.onnx"))
    onnx_io = {
        t.name: [d.dim_value or -1 for d in t.type.tensor_type.shape.dim][1:]
        for t in [*model.graph.input, *model.graph.output]
    }
    declared = {io["name"][0]: io for io in config["input"] + config["output"]}
    assert set(declared) == set(onnx_io) == {"images", "probabilities", "logits", "embeddings"}
    for name, io in declared.items():
        assert io["data_type"] == ["TYPE_FP32"]
        assert io["dims"] == onnx_io[name], name  # dims exclude the batch axis
    labels = (onnx_dir / "labels.txt").read_text().splitlines()
    assert labels == descriptor["classes"]
    assert declared["probabilities"]["label_filename"] == ["labels.txt"]

    pre = parse_pbtxt((repo / "flowerclf_preprocess" / "config.pbtxt").read_text())
    assert pre["backend"] == ["python"]
    assert pre["output"][0]["dims"] == declared["images"]["dims"]
    ensemble = parse_pbtxt((repo / "flowerclf" / "config.pbtxt").read_text())
    assert ensemble["platform"] == ["ensemble"] and (repo / "flowerclf" / "1").is_dir()
    steps = ensemble["ensemble_scheduling"][0]["step"]
    assert [s["model_name"][0] for s in steps] == [
        "flowerclf_preprocess", "flowerclf_onnx", "flowerclf_reject"
    ]  # fmt: skip
    reject = parse_pbtxt((repo / "flowerclf_reject" / "config.pbtxt").read_text())
    assert reject["backend"] == ["python"]
    assert [o["name"][0] for o in ensemble["output"]] == [
        "probabilities", "embeddings", "unknown_score", "is_known"
    ]  # fmt: skip


def test_triton_python_preprocessing_step_equals_flowerclf_preprocessing(
    model_package: TrainedPackage, monkeypatch: pytest.MonkeyPatch
):
    """Run the Python-backend model with a stand-in for Triton's utility module."""
    step_dir = model_package.package / "triton" / "flowerclf_preprocess" / "1"
    py_compile.compile(str(step_dir / "model.py"), doraise=True)

    class Tensor:
        def __init__(self, name: str, array: np.ndarray) -> None:
            self.name, self.array = name, array

        def as_numpy(self) -> np.ndarray:
            return self.array

    utils = types.SimpleNamespace(
        Tensor=Tensor,
        InferenceResponse=lambda output_tensors=None, error=None: (output_tensors, error),
        TritonError=str,
        get_input_tensor_by_name=lambda request, name: request[name],
    )
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", utils)
    monkeypatch.syspath_prepend(str(step_dir))
    monkeypatch.delitem(sys.modules, "preprocess", raising=False)
    spec = importlib.util.spec_from_file_location("triton_step", step_dir / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    step = module.TritonPythonModel()
    step.initialize({})
    images = sorted(model_package.images.rglob("*.jpg"))[:3]
    request = {"image_bytes": Tensor("image_bytes", np.array([[p.read_bytes()] for p in images],
                                                               dtype=object))}  # fmt: skip
    bad = {"image_bytes": Tensor("image_bytes", np.array([[b"nope"]], dtype=object))}
    (outputs, error), (_, bad_error) = step.execute([request, bad])
    assert error is None and "cannot decode" in bad_error
    expected = Classifier.load(model_package.package)
    np.testing.assert_allclose(
        outputs[0].array, np.stack([expected.preprocess(p) for p in images]), atol=1e-6
    )


# --- MLflow ----------------------------------------------------------------------------


def test_registered_pyfunc_model_is_served_by_mlflow_models_serve(
    model_package: TrainedPackage, tmp_path: Path
):
    import httpx

    descriptor = json.loads((model_package.package / "flowerclf-model.json").read_text())
    model_uri = descriptor["mlflow"]["registered_model_uri"]
    assert model_uri.startswith("models:/flowerclf-folder-simple_cnn/")
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow runs `uvicorn` from PATH
    env = os.environ | {
        "MLFLOW_TRACKING_URI": model_package.tracking_uri,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow_cli), "models", "serve", "-m", model_uri, "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        why = wait_for_http(f"{url}/ping", server, time.monotonic() + 120, interval=0.5)
        if why is not None:
            output = server.stdout.read().decode()[-2000:] if server.poll() is not None else ""
            pytest.fail(f"mlflow models serve did not come up within 120 s ({why}): {output}")
        images = sorted(model_package.images.rglob("*.jpg"))[:3]
        rows = [[base64.b64encode(p.read_bytes()).decode()] for p in images] + [["bm90IGFu"]]
        response = httpx.post(
            f"{url}/invocations",
            json={"dataframe_split": {"columns": ["image"], "data": rows}},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        expected = Classifier.load(model_package.package).predict(images)
        assert [p["predicted_class"] for p in predictions[:3]] == [
            e.predicted_class for e in expected
        ]
        assert predictions[0]["confidence"] == pytest.approx(expected[0].confidence, abs=1e-5)
        assert set(predictions[0]["all_predictions"]) == {"a", "b", "c"}
        assert predictions[3]["error"] and predictions[3]["predicted_class"] == ""
    finally:
        stop_process(server, timeout_s=20)


# --- benchmark -------------------------------------------------------------------------


def test_benchmark_json_has_every_runtime_and_ratio(
    model_package: TrainedPackage, capsys: pytest.CaptureFixture[str], monkeypatch
):
    import flowerclf.inference.benchmark as benchmark

    monkeypatch.setattr(benchmark, "MIN_SECONDS", 0.2)  # a smoke run, not a measurement
    code = main(["benchmark", "--model", str(model_package.package), "--images",
                 str(model_package.images), "--num-images", "40", "--latency-runs", "5",
                 "--runtimes", "torch,onnx_fp32,onnx_int8,openvino_fp32,auto",
                 "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    for runtime in ("torch", "onnx_fp32", "onnx_int8"):
        figures = report[runtime]
        for key in ("throughput_ips", "p50_ms", "p95_ms", "peak_rss_mb"):
            assert figures[key] > 0, (runtime, key)
        assert figures["p95_ms"] >= figures["p50_ms"]
    assert report["end_to_end_ips"] > 0 and report["end_to_end"]["errors"] == 0
    assert report["images"]["count"] == 40
    ratios = report["ratios"]
    assert ratios["onnx_fp32_vs_torch"] == pytest.approx(
        report["onnx_fp32"]["throughput_ips"] / report["torch"]["throughput_ips"], rel=0.01
    )
    assert ratios["onnx_int8_vs_fp32"] > 0
    assert set(report["targets"]) >= {"onnx_fp32_vs_torch", "onnx_int8_vs_fp32"}
    # Issue 16: OpenVINO, auto (and what it picked), the machine's limit.
    assert report["openvino_fp32"]["throughput_ips"] > 0
    assert report["auto"]["backend"] in ("onnx", "openvino", "onnx_int8", "openvino_int8")
    assert report["auto"]["throughput_ips"] > 0
    assert ratios["auto_vs_onnx_fp32"] == pytest.approx(
        report["auto"]["throughput_ips"] / report["onnx_fp32"]["throughput_ips"], rel=0.01
    )
    assert ratios["auto_vs_onnx_fp32_latency"] > 0 and ratios["end_to_end_vs_auto"] > 0
    assert report["limit"]["matmul_gflops"] > 0 and report["limit"]["model_gflop_per_image"] > 0
    stages = report["end_to_end"]["stages"]
    assert stages["decode_ms"] > 0 and stages["preprocess_ms"] > 0 and stages["images"] == 40
    assert 0 < ratios["end_to_end_ceiling_vs_auto"] < 1
    assert set(report["cpu_features"]) == {"avx2", "avx512", "vnni", "bf16", "amx"}
