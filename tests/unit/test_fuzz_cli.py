"""``flowerclf predict FOLDER`` on seeded mutated images: every file answered, no traceback.

Issue 12, item 6: one JPEG with a damaged EXIF block made ``flowerclf predict DIR`` exit
without printing the good files' results. The long run is ``python -m scripts.fuzz_images``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowerclf.cli.main import main
from flowerclf.core.imaging import ImageDecodeError, decode_rgb
from flowerclf.core.package_format import load_package
from tests.helpers.fuzz import mutations


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's "corrupt EXIF" notes
def test_predict_folder_of_fuzzed_images_answers_every_file(
    colour_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = load_package(colour_package)
    target = package.spec.resize_size
    folder = tmp_path / "fuzzed"
    folder.mkdir()
    decodable = {}
    for case in mutations(300, seed=3):  # includes the damaged-EXIF JPEG and a broken GIF
        path = folder / f"{case.index:04d}-{case.seed_name}-{case.mutation}{case.suffix}"
        path.write_bytes(case.data)
        try:
            decode_rgb(case.data, target_short_side=target)
            decodable[str(path)] = True
        except ImageDecodeError:
            decodable[str(path)] = False

    status = main(["predict", str(folder), "--model", str(colour_package)])

    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    assert sorted(line["path"] for line in lines) == sorted(decodable)  # one line per file
    for line in lines:
        if decodable[line["path"]]:
            assert line["predicted_class"] in package.classes, line
        else:
            assert line["error"], line
    assert sum(decodable.values()) > 50 and not all(decodable.values())
    assert status == 1 and "Traceback" not in captured.err
