"""schemathesis against the OpenAPI schema of a real ``flowerclf serve`` process.

Runs the schemathesis CLI (its pytest plugin does not support this pytest) with every
default check except ``positive_data_acceptance``: a schema cannot say "bytes that decode
to an image", so schema-valid random bytes are rightly refused with 415/422.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.server import LiveServer

pytestmark = pytest.mark.slow


def _schemathesis() -> list[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("schemathesis")
    if found is None:
        pytest.fail("schemathesis is not installed (pip install -e '.[dev]')")
    return [found]


def test_schemathesis_finds_no_server_errors(live_server: LiveServer, tmp_path: Path) -> None:
    command = [
        *_schemathesis(), "run", f"{live_server.url}/openapi.json",
        "--max-examples", "30", "--seed", "1", "--no-color",
        "--exclude-checks", "positive_data_acceptance",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "API Operations" in output and "Tested: 10" in output, output[-3000:]
    assert live_server.alive()
    assert not any(" 500 " in line or "Traceback" in line for line in live_server.log)
