"""The score command's fixed choices, importable without pyarrow (the CLI builds its
parser from them in every install, including the runtime-only one)."""

from __future__ import annotations

ENGINES = ("local", "spark")
DEFAULT_PARTITION_SIZE = 1024
