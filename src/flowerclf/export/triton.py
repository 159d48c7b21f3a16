"""A Triton Inference Server model repository for the package's ONNX model.

Layout (``tritonserver --model-repository <package>/triton`` loads it as is)::

    triton/
      flowerclf_onnx/         ONNX Runtime backend, dynamic batching, preprocessed input
        config.pbtxt
        labels.txt            class names in label order (Triton's classification extension)
        1/model.onnx
      flowerclf_preprocess/   Python backend: encoded image bytes -> preprocessed tensor
        config.pbtxt
        1/model.py
        1/flowerclf_preprocess_spec.json
        1/flowerclf_core/     flowerclf's own decoding and preprocessing, copied verbatim
      flowerclf_reject/       Python backend: logits + embeddings -> unknown_score, is_known
        config.pbtxt            (where the package has a rejection method)
        1/model.py
        1/flowerclf_open_world.json, 1/open_set.npz, 1/flowerclf_core/
      flowerclf/              ensemble: bytes in -> probabilities + embeddings (+ unknown_score,
        config.pbtxt            is_known) out
        1/

Probabilities are the package's calibrated ones, as every other runtime returns: the ONNX
copy in ``flowerclf_onnx/1`` divides the logits by the package's temperature
(``open_world.temperature``) before its softmax (``logits`` stay raw, as in ``model.onnx``).

Unknown-image rejection is not re-implemented either: the ``flowerclf_reject`` step loads
the package's ``open_world`` section and statistics with ``load_open_world`` and scores with
``OpenWorld.scores``, the code every other runtime runs, and answers ``is_known`` against the
package's threshold (as ``Classifier`` does with rejection on).

Preprocessing is not re-implemented for Triton: the Python step runs the same
``decode_rgb`` (format allow-list, pixel limit, shrink-on-decode, 16-bit/CMYK/alpha
handling, EXIF orientation) and ``preprocess_eval`` with the same spec as every other
runtime. Those modules need only NumPy and Pillow, so they are shipped as files next to the
step (``flowerclf_core``) and Triton's Python environment needs no flowerclf install; the
one change in the copies is that their ``flowerclf.core`` imports are made relative.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import flowerclf.core.errors as errors_module
import flowerclf.core.imaging as imaging_module
import flowerclf.core.open_set as open_set_module
import flowerclf.core.preprocess as preprocess_module
from flowerclf.core.open_set import OPEN_SET_FILE, OPEN_SET_FILE_KEY, OPEN_WORLD_KEY
from flowerclf.core.package_format import INPUT_NAME
from flowerclf.core.preprocess import PreprocessSpec

ONNX_MODEL = "flowerclf_onnx"
PREPROCESS_MODEL = "flowerclf_preprocess"
REJECT_MODEL = "flowerclf_reject"
ENSEMBLE_MODEL = "flowerclf"
OPEN_WORLD_FILE = "flowerclf_open_world.json"
MAX_BATCH_SIZE = 32
SPEC_FILE = "flowerclf_preprocess_spec.json"
# The package the Python step imports its decoding and preprocessing from; its modules are
# flowerclf.core's, copied unchanged (imaging imports errors relatively for this reason).
SHIPPED_PACKAGE = "flowerclf_core"
SHIPPED_MODULES = (errors_module, imaging_module, preprocess_module, open_set_module)

_PYTHON_MODEL = '''\
"""Triton Python backend: encoded image bytes -> flowerclf preprocessed float32 tensor.

Decoding and preprocessing are flowerclf's own (flowerclf_core, shipped next to this file),
so Triton refuses and converts images exactly as the CLI, the REST service and MLflow do.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from {package}.errors import ImageDecodeError
from {package}.imaging import decode_rgb
from {package}.preprocess import PreprocessSpec, preprocess_eval


class TritonPythonModel:
    def initialize(self, args):
        here = Path(__file__).parent
        self.spec = PreprocessSpec.from_dict(json.loads((here / "{spec_file}").read_text()))

    def _to_array(self, data):
        decoded = decode_rgb(data, target_short_side=self.spec.resize_size)
        return preprocess_eval(decoded.image, self.spec)

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "image_bytes").as_numpy()
            try:
                batch = np.stack([self._to_array(bytes(item[0])) for item in raw])
            except ImageDecodeError as exc:  # one bad image fails its request, not the server
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"cannot decode image ({{exc.kind}}): {{exc}}")))
                continue
            out = pb_utils.Tensor("{input_name}", batch.astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
'''

_REJECT_MODEL = '''\
"""Triton Python backend: logits + embeddings -> unknown_score, is_known.

The package's own open-world settings and statistics, loaded and applied by flowerclf's
code (flowerclf_core.open_set, shipped next to this file), so Triton rejects exactly the
images the CLI, the REST service and the Python API reject.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from {package}.open_set import load_open_world


class TritonPythonModel:
    def initialize(self, args):
        here = Path(__file__).parent
        descriptor = json.loads((here / "{open_world_file}").read_text())
        self.open_world = load_open_world(descriptor, here)

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
            embeddings = pb_utils.get_input_tensor_by_name(request, "embeddings").as_numpy()
            scores = self.open_world.scores(logits, embeddings)
            known = np.array([[self.open_world.is_known(float(s))] for s in scores])
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("unknown_score", scores.astype(np.float32).reshape(-1, 1)),
                pb_utils.Tensor("is_known", known.astype(np.bool_)),
            ]))
        return responses
'''


def _onnx_config(input_size: int, num_classes: int, embedding_dim: int) -> str:
    return f"""name: "{ONNX_MODEL}"
backend: "onnxruntime"
max_batch_size: {MAX_BATCH_SIZE}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ 3, {input_size}, {input_size} ]
  }}
]
output [
  {{
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ {num_classes} ]
    label_filename: "labels.txt"
  }},
  {{
    name: "logits"
    data_type: TYPE_FP32
    dims: [ {num_classes} ]
  }},
  {{
    name: "embeddings"
    data_type: TYPE_FP32
    dims: [ {embedding_dim} ]
  }}
]
dynamic_batching {{
  preferred_batch_size: [ 8, 16, {MAX_BATCH_SIZE} ]
  max_queue_delay_microseconds: 2000
}}
instance_group [
  {{
    count: 1
    kind: KIND_CPU
  }}
]
"""


def _preprocess_config(input_size: int) -> str:
    return f"""name: "{PREPROCESS_MODEL}"
backend: "python"
max_batch_size: {MAX_BATCH_SIZE}
input [
  {{
    name: "image_bytes"
    data_type: TYPE_STRING
    dims: [ 1 ]
  }}
]
output [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ 3, {input_size}, {input_size} ]
  }}
]
dynamic_batching {{ }}
instance_group [
  {{
    count: 2
    kind: KIND_CPU
  }}
]
"""


# The rejection step's outputs: listed once, in its own config and in the ensemble's.
_REJECT_OUTPUTS = """
  {
    name: "unknown_score"
    data_type: TYPE_FP32
    dims: [ 1 ]
  },
  {
    name: "is_known"
    data_type: TYPE_BOOL
    dims: [ 1 ]
  }"""


def _reject_config(num_classes: int, embedding_dim: int) -> str:
    return f"""name: "{REJECT_MODEL}"
backend: "python"
max_batch_size: {MAX_BATCH_SIZE}
input [
  {{
    name: "logits"
    data_type: TYPE_FP32
    dims: [ {num_classes} ]
  }},
  {{
    name: "embeddings"
    data_type: TYPE_FP32
    dims: [ {embedding_dim} ]
  }}
]
output [{_REJECT_OUTPUTS}
]
dynamic_batching {{ }}
instance_group [
  {{
    count: 1
    kind: KIND_CPU
  }}
]
"""


_REJECT_STEP = f""",
    {{
      model_name: "{REJECT_MODEL}"
      model_version: -1
      input_map {{ key: "logits" value: "logits" }}
      input_map {{ key: "embeddings" value: "embeddings" }}
      output_map {{ key: "unknown_score" value: "unknown_score" }}
      output_map {{ key: "is_known" value: "is_known" }}
    }}"""


def _ensemble_config(
    input_size: int, num_classes: int, embedding_dim: int, reject: bool = False
) -> str:
    extra_outputs = "," + _REJECT_OUTPUTS if reject else ""
    extra_step = _REJECT_STEP if reject else ""
    logits_map = '\n      output_map { key: "logits" value: "logits" }' if reject else ""
    return f"""name: "{ENSEMBLE_MODEL}"
platform: "ensemble"
max_batch_size: {MAX_BATCH_SIZE}
input [
  {{
    name: "image_bytes"
    data_type: TYPE_STRING
    dims: [ 1 ]
  }}
]
output [
  {{
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ {num_classes} ]
  }},
  {{
    name: "embeddings"
    data_type: TYPE_FP32
    dims: [ {embedding_dim} ]
  }}{extra_outputs}
]
ensemble_scheduling {{
  step [
    {{
      model_name: "{PREPROCESS_MODEL}"
      model_version: -1
      input_map {{ key: "image_bytes" value: "image_bytes" }}
      output_map {{ key: "{INPUT_NAME}" value: "preprocessed" }}
    }},
    {{
      model_name: "{ONNX_MODEL}"
      model_version: -1
      input_map {{ key: "{INPUT_NAME}" value: "preprocessed" }}
      output_map {{ key: "probabilities" value: "probabilities" }}
      output_map {{ key: "embeddings" value: "embeddings" }}{logits_map}
    }}{extra_step}
  ]
}}
"""


def ship_core_modules(destination: Path) -> Path:
    """Copy decoding and preprocessing (flowerclf.core's files, unchanged) into a package."""
    destination.mkdir(parents=True, exist_ok=True)
    (destination / "__init__.py").write_text(
        '"""flowerclf.core\'s decoding and preprocessing, shipped with the Triton step."""\n'
    )
    for module in SHIPPED_MODULES:
        source = Path(str(module.__file__))
        # Relative imports: the copies import each other inside the shipped package.
        text = source.read_text().replace("from flowerclf.core.", "from .")
        (destination / source.name).write_text(text)
    return destination


def write_reject_step(
    root: Path, open_world: dict[str, Any], stats: Path | None, num_classes: int,
    embedding_dim: int,
) -> bool:  # fmt: skip
    """The rejection step, where ``open_world`` (the descriptor's section) names a method;
    returns whether it was written."""
    if not (open_world.get("reject") or {}).get("method"):
        return False
    step = root / REJECT_MODEL
    (step / "1").mkdir(parents=True, exist_ok=True)
    (step / "config.pbtxt").write_text(_reject_config(num_classes, embedding_dim))
    (step / "1" / "model.py").write_text(
        _REJECT_MODEL.format(package=SHIPPED_PACKAGE, open_world_file=OPEN_WORLD_FILE)
    )
    files = {}
    if stats is not None and stats.is_file():
        shutil.copyfile(stats, step / "1" / OPEN_SET_FILE)
        files[OPEN_SET_FILE_KEY] = OPEN_SET_FILE
    descriptor = {OPEN_WORLD_KEY: open_world, "files": files}
    (step / "1" / OPEN_WORLD_FILE).write_text(json.dumps(descriptor, indent=2) + "\n")
    ship_core_modules(step / "1" / SHIPPED_PACKAGE)
    return True


def write_calibrated_onnx(onnx_path: Path, destination: Path, temperature: float) -> Path:
    """Copy ``onnx_path`` with its ``probabilities`` made ``softmax(logits / temperature)``.

    The package's runtimes all calibrate (:meth:`flowerclf.core.open_set.OpenWorld.probabilities`);
    Triton runs the graph alone, so the division goes into the graph, before its softmax.
    """
    if temperature == 1.0:
        shutil.copyfile(onnx_path, destination)
        return destination
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    softmax = next(
        node for node in model.graph.node
        if node.op_type == "Softmax" and list(node.output) == ["probabilities"]
    )  # fmt: skip
    scaled = f"{softmax.input[0]}_over_temperature"
    model.graph.initializer.append(
        numpy_helper.from_array(np.array(temperature, dtype=np.float32), "flowerclf_temperature")
    )
    division = helper.make_node("Div", [softmax.input[0], "flowerclf_temperature"], [scaled])
    nodes = list(model.graph.node)
    nodes.insert(nodes.index(softmax), division)
    softmax.input[0] = scaled
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(destination))
    return destination


def write_triton_repository(
    root: Path,
    onnx_path: Path,
    classes: list[str],
    spec: PreprocessSpec,
    embedding_dim: int,
    temperature: float = 1.0,
    open_world: dict[str, Any] | None = None,
    open_set_stats: Path | None = None,
) -> Path:
    """Write the repository under ``root`` (created); returns ``root``. ``temperature``:
    the package's calibration (probabilities = softmax(logits / temperature));
    ``open_world``: the descriptor's section, ``open_set_stats``: its statistics file (the
    ensemble then also answers ``unknown_score`` and ``is_known``)."""

    size, num_classes = spec.input_size, len(classes)
    onnx_dir = root / ONNX_MODEL
    (onnx_dir / "1").mkdir(parents=True, exist_ok=True)
    write_calibrated_onnx(onnx_path, onnx_dir / "1" / "model.onnx", temperature)
    (onnx_dir / "config.pbtxt").write_text(_onnx_config(size, num_classes, embedding_dim))
    (onnx_dir / "labels.txt").write_text("".join(f"{name}\n" for name in classes))

    pre_dir = root / PREPROCESS_MODEL
    (pre_dir / "1").mkdir(parents=True, exist_ok=True)
    (pre_dir / "config.pbtxt").write_text(_preprocess_config(size))
    (pre_dir / "1" / "model.py").write_text(
        _PYTHON_MODEL.format(spec_file=SPEC_FILE, input_name=INPUT_NAME, package=SHIPPED_PACKAGE)
    )
    (pre_dir / "1" / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    ship_core_modules(pre_dir / "1" / SHIPPED_PACKAGE)

    reject = write_reject_step(root, open_world or {}, open_set_stats, num_classes, embedding_dim)
    ensemble_dir = root / ENSEMBLE_MODEL
    (ensemble_dir / "1").mkdir(parents=True, exist_ok=True)  # Triton wants a version dir
    (ensemble_dir / "config.pbtxt").write_text(
        _ensemble_config(size, num_classes, embedding_dim, reject=reject)
    )
    return root
