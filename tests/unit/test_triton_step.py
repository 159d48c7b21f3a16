"""The Triton Python step decodes exactly like flowerclf (issue 12, item 9).

The step runs in a subprocess where ``flowerclf`` cannot be imported, as in Triton's own
Python environment: everything it needs must be shipped next to it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowerclf.core.imaging import ImageDecodeError, decode_rgb
from flowerclf.core.open_set import OpenSetStats, load_open_world
from flowerclf.core.package_format import INPUT_NAME
from flowerclf.core.preprocess import PreprocessSpec, preprocess_eval
from flowerclf.export.triton import (
    ENSEMBLE_MODEL,
    PREPROCESS_MODEL,
    REJECT_MODEL,
    write_triton_repository,
)
from tests.helpers.images import encode, make_photo

SPEC = PreprocessSpec(input_size=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))

# A Triton Python step run as Triton would, in a process where flowerclf cannot be imported:
# argv[1] is the step's version directory; triton_python_backend_utils is a stand-in whose
# responses are (output tensors, error).
_STEP_PRELUDE = """
import json, sys, types
import numpy as np
sys.modules["flowerclf"] = None  # Triton's environment has no flowerclf installed
sys.path.insert(0, sys.argv[1])

class Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array
    def as_numpy(self):
        return self.array

sys.modules["triton_python_backend_utils"] = types.SimpleNamespace(
    Tensor=Tensor,
    InferenceResponse=lambda output_tensors=None, error=None: (output_tensors, error),
    TritonError=str,
    get_input_tensor_by_name=lambda request, name: request[name],
)
"""

_RUN_STEP = _STEP_PRELUDE + textwrap.dedent(
    """
    step_dir, probes_dir, out_dir = sys.argv[1:4]
    import model
    step = model.TritonPythonModel()
    step.initialize({})
    names = json.loads(sys.argv[4])
    requests = []
    for name in names:
        data = open(f"{probes_dir}/{name}", "rb").read()
        requests.append({"image_bytes": Tensor("image_bytes", np.array([[data]], dtype=object))})
    errors = {}
    for name, (outputs, error) in zip(names, step.execute(requests)):
        if error is None:
            np.save(f"{out_dir}/{name}.npy", outputs[0].array[0])
        else:
            errors[name] = error
    print(json.dumps(errors))
    """
)


def _huge_png_header() -> bytes:
    """A valid PNG signature and IHDR claiming 60000 x 60000 pixels, no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    ihdr = (60000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _probes() -> dict[str, bytes]:
    photo = make_photo((80, 60), 5)
    grey16 = (np.arange(80 * 60, dtype=np.uint32).reshape(60, 80) * 13 % 65536).astype(np.uint16)
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    exif = Image.Exif()
    exif[0x0112] = 8
    return {
        "photo.jpg": encode(photo, "JPEG"),
        "rotated.jpg": encode(photo, "JPEG", exif=exif.tobytes()),
        "grey16.png": encode(Image.fromarray(grey16), "PNG"),
        "cmyk.jpg": encode(photo.convert("CMYK"), "JPEG"),
        "alpha.png": encode(rgba, "PNG"),
        "big.jpg": encode(make_photo((1200, 900), 6), "JPEG"),
        "pcx.pcx": encode(photo, "PCX"),
        "huge.png": _huge_png_header(),
    }


@pytest.fixture
def step_dir(tmp_path: Path) -> Path:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not used by the preprocessing step")
    repo = write_triton_repository(tmp_path / "triton", onnx, ["a", "b"], SPEC, 8)
    return repo / PREPROCESS_MODEL / "1"


def test_triton_step_decodes_and_refuses_like_decode_rgb(step_dir: Path, tmp_path: Path) -> None:
    probes = _probes()
    probes_dir, out_dir = tmp_path / "probes", tmp_path / "out"
    probes_dir.mkdir()
    out_dir.mkdir()
    for name, data in probes.items():
        (probes_dir / name).write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", _RUN_STEP, str(step_dir), str(probes_dir), str(out_dir),
         json.dumps(sorted(probes))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    for name, data in sorted(probes.items()):
        try:
            image = decode_rgb(data, target_short_side=SPEC.resize_size).image
        except ImageDecodeError as exc:
            assert name in errors, name
            assert f"({exc.kind})" in errors[name] and "cannot decode image" in errors[name]
            continue
        assert name not in errors, errors.get(name)
        np.testing.assert_array_equal(
            np.load(out_dir / f"{name}.npy"), preprocess_eval(image, SPEC), err_msg=name
        )
    assert set(errors) == {"pcx.pcx", "huge.png"}


def test_triton_step_ships_flowerclf_core_files_with_relative_imports_only(
    step_dir: Path,
) -> None:
    import flowerclf.core.errors
    import flowerclf.core.imaging
    import flowerclf.core.open_set
    import flowerclf.core.preprocess

    modules = (flowerclf.core.errors, flowerclf.core.imaging, flowerclf.core.preprocess,
               flowerclf.core.open_set)  # fmt: skip
    for module in modules:
        source = Path(str(module.__file__)).read_text()
        shipped = (step_dir / "flowerclf_core" / Path(str(module.__file__)).name).read_text()
        assert shipped == source.replace("from flowerclf.core.", "from .")
        assert "flowerclf.core" not in shipped.replace("flowerclf.core's", "")


_RUN_REJECT = _STEP_PRELUDE + textwrap.dedent(
    """
    step_dir, inputs, out = sys.argv[1:4]
    import model
    step = model.TritonPythonModel()
    step.initialize({})
    data = np.load(inputs)
    # Two requests, as Triton's dynamic batcher may send them.
    requests = [
        {"logits": Tensor("logits", data["logits"][part]),
         "embeddings": Tensor("embeddings", data["embeddings"][part])}
        for part in (slice(0, 3), slice(3, None))
    ]
    outputs = [dict((t.name, t.array) for t in tensors) for tensors, _ in step.execute(requests)]
    np.savez(out, unknown_score=np.concatenate([o["unknown_score"] for o in outputs]),
             is_known=np.concatenate([o["is_known"] for o in outputs]))
    """
)


@pytest.mark.parametrize("method", ["knn", "mahalanobis", "energy", "msp_knn"])
def test_triton_reject_step_answers_like_the_package_open_world(
    method: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    bank = rng.standard_normal((40, 8)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    stats = OpenSetStats(bank=bank, class_means=rng.standard_normal((2, 8)),
                         precision=np.eye(8), k=3).with_references(
        rng.uniform(0, 1, 30), rng.uniform(0, 2, 30))  # fmt: skip
    stats_path = stats.save(tmp_path / "open_set.npz")
    logits = rng.standard_normal((7, 2)).astype(np.float32) * 3
    embeddings = rng.standard_normal((7, 8)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    section = {"temperature": 1.3, "reject": {"method": method, "keep": 0.95}}
    expected_world = load_open_world(
        {"open_world": section, "files": {"open_set": "open_set.npz"}}, tmp_path, threshold=0.0
    )
    scores = expected_world.scores(logits, embeddings)
    assert scores is not None
    threshold = float(np.median(scores))  # some known, some not
    section["reject"]["thresholds"] = {method: threshold}
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not used by the rejection step")
    repo = write_triton_repository(
        # (temperature 1: the placeholder ONNX file is copied, not rewritten; the step reads
        # the temperature from the section)
        tmp_path / "triton", onnx, ["a", "b"], SPEC, 8,
        open_world=section, open_set_stats=stats_path,
    )  # fmt: skip
    np.savez(tmp_path / "inputs.npz", logits=logits, embeddings=embeddings)
    done = subprocess.run(
        [sys.executable, "-c", _RUN_REJECT, str(repo / REJECT_MODEL / "1"),
         str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answered = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(answered["unknown_score"][:, 0], scores, rtol=1e-6)
    assert answered["is_known"][:, 0].tolist() == [bool(s <= threshold) for s in scores]
    assert 0 < answered["is_known"].sum() < len(scores)
    ensemble = (repo / ENSEMBLE_MODEL / "config.pbtxt").read_text()
    assert f'model_name: "{REJECT_MODEL}"' in ensemble and '"is_known"' in ensemble


def test_triton_ensemble_has_no_rejection_step_without_a_method(tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"unused")
    repo = write_triton_repository(tmp_path / "triton", onnx, ["a", "b"], SPEC, 8,
                                   open_world={"temperature": 1.0})  # fmt: skip
    assert not (repo / REJECT_MODEL).exists()
    assert "is_known" not in (repo / ENSEMBLE_MODEL / "config.pbtxt").read_text()


def _tiny_onnx(tmp_path: Path) -> Path:
    """images -> mean colour -> linear logits -> softmax: the package model's output names."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 1.0]], dtype=np.float32)
    nodes = [
        helper.make_node("ReduceMean", [INPUT_NAME, "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("Identity", ["pooled"], ["embeddings"]),
    ]
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", size])
        for name, size in (("probabilities", 2), ("logits", 2), ("embeddings", 3))
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, 8, 8])],
        outputs,
        [numpy_helper.from_array(weights, "weights"),
         numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def test_triton_onnx_copy_returns_the_calibrated_probabilities(tmp_path: Path) -> None:
    import onnxruntime as ort

    from flowerclf.core.open_set import softmax
    from flowerclf.export.triton import write_calibrated_onnx

    source = _tiny_onnx(tmp_path)
    calibrated = write_calibrated_onnx(source, tmp_path / "calibrated.onnx", temperature=2.5)
    images = np.random.default_rng(0).normal(size=(3, 3, 8, 8)).astype(np.float32)
    raw = ort.InferenceSession(str(source)).run(None, {INPUT_NAME: images})
    probabilities, logits, _ = ort.InferenceSession(str(calibrated)).run(None, {INPUT_NAME: images})
    np.testing.assert_allclose(logits, raw[1], rtol=1e-6)  # logits stay raw
    np.testing.assert_allclose(probabilities, softmax(logits, 2.5), atol=1e-6)
    assert not np.allclose(probabilities, raw[0], atol=1e-3)
