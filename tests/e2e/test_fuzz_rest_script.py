"""scripts/fuzz_images.py, part 3: seeded mutated images against a real ``flowerclf serve``.

Issue 12's fuzz target names the REST route beside ``decode_rgb`` and the CLI; the long run
is ``python -m scripts.fuzz_images --count 20000 --model DIR``. Here a short run must pass,
and the checker must catch a wrong answer.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.helpers.fuzz import mutations
from tests.helpers.scripts import load_script

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_script() -> ModuleType:
    return load_script("fuzz_images")


def test_mutated_uploads_get_the_decoders_answer_from_a_live_server(
    fuzz_script: ModuleType, colour_package: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pillow's "corrupt EXIF" notes
        report = fuzz_script.fuzz_rest(list(mutations(160, seed=11)), colour_package)
    assert report["problems"] == []
    statuses = report["statuses"]
    assert sum(statuses.values()) == 160
    # Both sides of the decoder are reached, or the run proves little.
    assert statuses.get("200", 0) >= 20 and statuses.get("422", 0) >= 20, statuses


def test_the_checker_flags_a_server_error_and_an_undocumented_code(
    fuzz_script: ModuleType,
) -> None:
    case = next(iter(mutations(1, seed=0)))
    undecodable = type(case)(0, case.seed_name, "truncate", case.data[:20])
    server_error = httpx.Response(500, json={"error": {"code": "internal_error"}})
    problem = fuzz_script._rest_problem(undecodable, server_error, 10**8, 224)
    assert problem and "status 500" in problem
    wrong_code = httpx.Response(
        422, json={"error": {"code": "oops", "message": "m", "status": 422, "details": {}}}
    )
    assert "undocumented" in fuzz_script._rest_problem(undecodable, wrong_code, 10**8, 224)
