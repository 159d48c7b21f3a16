"""The install contract: the base install is the runtime, each layer is an extra, ``[all]``
is every optional part, the floors keep known-vulnerable releases out, and a command whose
extra is missing says which one to install, in one line."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from packaging.version import Version

from flowerclf.cli import extras, inference_commands, train_commands
from flowerclf.cli.extras import missing_requirements
from flowerclf.cli.main import build_parser, main
from flowerclf.core.errors import MissingExtraError
from tests.helpers.colour_package import solid
from tests.helpers.extras import CLI_IN_PROCESS, HEAVY, declared, optional_dependencies
from tests.helpers.paths import REPO_ROOT
from tests.helpers.scripts import load_script
from tests.helpers.server import subprocess_env

# A release with a public advisory, for each floor that keeps one out (issue 12 item 10).
VULNERABLE = {
    "pillow": "11.2.1",  # CVE-2025-48379 (fixed in 11.3.0); 12.1.1 fixes the PSD write
    "python-multipart": "0.0.17",  # CVE-2024-53981 (0.0.18); path traversal fixed in 0.0.22
    "fastapi": "0.109.0",  # CVE-2024-24762
    "starlette": "0.49.0",  # CVE-2025-62727 (Range header DoS, fixed in 0.49.1)
    "torch": "2.5.1",  # CVE-2025-32434: torch.load(weights_only=True) code execution
    "tqdm": "4.66.2",  # CVE-2024-34062
    "lightning": "2.3.2",  # CVE-2024-5452
    "onnx": "1.16.2",  # CVE-2024-5187
}


def test_base_install_is_the_onnx_runtime() -> None:
    base = declared()
    assert {"numpy", "pillow", "onnxruntime"} <= set(base)
    assert not set(base) & set(HEAVY), set(base) & set(HEAVY)
    for name in ("fastapi", "uvicorn", "pydantic", "streamlit", "httpx"):
        assert name not in base, f"{name} belongs to an extra"


def test_every_layer_has_its_extra() -> None:
    optional = optional_dependencies()
    assert {"train", "export", "serve", "ui", "pipeline", "weights", "dev", "all"} <= set(optional)
    assert {"torch", "lightning", "hydra-core", "mlflow", "timm"} <= set(declared("train"))
    assert set(declared("train")) < set(declared("export"))
    assert {"onnx", "pyyaml"} <= set(declared("export"))
    assert {"fastapi", "uvicorn", "python-multipart"} <= set(declared("serve"))
    assert "streamlit" in declared("ui")
    assert {"dvc", "torch", "onnx"} <= set(declared("pipeline"))  # what its stages run


def test_all_installs_every_optional_part() -> None:
    optional = optional_dependencies()
    everything = set(declared("all"))
    for extra in optional:
        missing = set(declared(extra)) - everything
        assert not missing, f"[all] lacks [{extra}]'s {sorted(missing)}"


def test_make_install_installs_all() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r'pip install -e "\.\[all\]"', makefile)


@pytest.mark.parametrize(("name", "vulnerable"), sorted(VULNERABLE.items()))
def test_floors_exclude_releases_with_advisories(name: str, vulnerable: str) -> None:
    requirement = declared("all")[name]
    assert not requirement.specifier.contains(vulnerable), f"{requirement} admits {vulnerable}"
    assert requirement.specifier.contains(str(Version(vulnerable).major + 100))


def test_missing_requirements_follow_self_references_and_skip_other_markers() -> None:
    requirements = [
        "numpy>=1.24",
        'torch>=2.6; extra == "train"',
        'Py_Yaml>=6; extra == "export"',
        'flowerclf[train]; extra == "export"',
        "tomli; python_version < '3.11' and extra == 'export'",
        'fastapi>=0.120; extra == "serve"',
    ]
    installed = {"numpy", "fastapi"}
    missing = missing_requirements("export", requirements, lambda name: name in installed)
    assert missing == ["py-yaml", "torch"]
    assert missing_requirements("serve", requirements, lambda name: name in installed) == []
    assert missing_requirements("ui", requirements, lambda name: False) == []


def test_command_without_its_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = [f"flowerclf-absent-{i}" for i in range(6)]
    requirements = [f'{name}; extra == "train"' for name in absent]
    monkeypatch.setattr(extras, "_declared_requirements", lambda: requirements)
    monkeypatch.setattr(train_commands, "_train", lambda args: pytest.fail("ran without extra"))

    assert main(["train", "seed=1"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "error: flowerclf train needs the training extra: pip install 'flowerclf[train]' "
        "(not installed: flowerclf-absent-0, flowerclf-absent-1, flowerclf-absent-2, "
        "flowerclf-absent-3 and 2 more)\n"
    )


def test_module_missing_at_run_time_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(extras, "_declared_requirements", list)  # a source tree: no metadata

    def needs_torch(args: object) -> int:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(train_commands, "_train", needs_torch)
    assert main(["train"]) == 1
    assert capsys.readouterr().err == (
        "error: flowerclf train needs the training extra: pip install 'flowerclf[train]' "
        "(not installed: torch)\n"
    )


def test_flowerclf_module_missing_is_a_bug_and_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(extras, "_declared_requirements", list)

    def broken(args: object) -> int:
        raise ModuleNotFoundError("No module named 'flowerclf.nope'", name="flowerclf.nope")

    monkeypatch.setattr(train_commands, "_train", broken)
    with pytest.raises(ModuleNotFoundError, match="flowerclf.nope"):
        main(["train"])


def test_runtime_commands_need_no_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extras, "_declared_requirements", lambda: ['absent; extra == "train"'])
    with pytest.raises(MissingExtraError):
        extras.check_extra("train", "train")
    # predict and benchmark carry no extra: the check never runs for them.
    parser_defaults = {"predict": None, "benchmark": None, "serve": "serve", "ui": "ui"}
    parser = build_parser()
    for command, extra in parser_defaults.items():
        args, _ = parser.parse_known_args([command, *_required_args(command)])
        assert getattr(args, "extra", None) == extra, command


def _required_args(command: str) -> list[str]:
    return {"predict": ["x.jpg"], "ui": ["--api", "http://127.0.0.1:1"]}.get(command, [])


def test_benchmark_defaults_to_the_installed_runtimes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_find_spec = importlib.util.find_spec

    def without(*missing: str) -> object:
        def find_spec(name: str, *args: object) -> object:
            return None if name in missing else real_find_spec(name, *args)

        return find_spec

    monkeypatch.setattr(importlib.util, "find_spec", without("torch", "timm", "openvino"))
    assert inference_commands.default_runtimes() == ["onnx_fp32", "onnx_int8", "auto"]
    err = capsys.readouterr().err
    assert "pip install 'flowerclf[train]'" in err and "pip install 'flowerclf[openvino]'" in err
    monkeypatch.setattr(importlib.util, "find_spec", without("torch", "timm"))
    openvino = ["openvino_fp32", "openvino_int8", "openvino_bf16"]
    if real_find_spec("openvino"):
        assert inference_commands.default_runtimes() == ["onnx_fp32", "onnx_int8", *openvino,
                                                         "auto"]  # fmt: skip
    monkeypatch.undo()
    if real_find_spec("torch") and real_find_spec("timm") and real_find_spec("openvino"):
        assert inference_commands.default_runtimes() == [
            "torch",
            "onnx_fp32",
            "onnx_int8",
            *openvino,
            "auto",
        ]


def test_predict_imports_no_training_stack_even_where_it_is_installed(
    colour_package: Path, tmp_path: Path
) -> None:
    """Here torch and the rest are installed: predicting must still not import them."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("needs an environment where torch is importable")
    image = tmp_path / "blue.png"
    solid("blue").save(image)
    command = ["predict", str(image), "--model", str(colour_package)]
    result = subprocess.run(
        [sys.executable, "-c", CLI_IN_PROCESS, *command],
        capture_output=True, text=True, env=subprocess_env(), check=True, timeout=120,
    )  # fmt: skip
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 0
    assert json.loads(report["stdout"])["predicted_class"] == "blue"
    assert report["heavy"] == []


def _load_audit_script() -> ModuleType:
    return load_script("audit_dependencies")


@pytest.mark.parametrize(
    ("stdout", "stderr", "reachable", "reason"),
    [
        ('{"dependencies": [{"name": "pillow", "vulns": [{"id": "X"}]}]}', "", True, ""),
        (
            '{"dependencies": [{"name": "pillow", "skip_reason": "not found"}]}',
            "",
            False,
            "not found",
        ),
        ("", "Traceback...\nConnectionError: no route\n", False, "ConnectionError: no route"),
        ('{"dependencies": [{"name": "pillow", "vulns": []}]}', "", False, "no advisories"),
    ],
)
def test_audit_runs_only_when_the_canary_shows_the_service_answers(
    monkeypatch: pytest.MonkeyPatch, stdout: str, stderr: str, reachable: bool, reason: str
) -> None:
    audit = _load_audit_script()

    def fake_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 0, stdout, stderr)

    monkeypatch.setattr(audit.subprocess, "run", fake_run)
    found, why = audit.service_reachable()
    assert found is reachable and why.startswith(reason)
    monkeypatch.setattr(audit, "run_audits", lambda: 3)
    assert audit.main([]) == (3 if reachable else 0)
    assert audit.main(["--require"]) == (3 if reachable else 1)
