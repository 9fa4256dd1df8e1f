"""Where ScalingDown keeps what it can rebuild: eval results, converted teachers, in-progress build shards.

One root, ``$SCALINGDOWN_CACHE``, by default ``.cache`` in the project checkout (ignored by git, deleted by
``make clean``). The default follows this package's location, not the working directory, so a command run from
another folder reads and writes the same cache; nothing outside the project changes a result.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout holding scalingdown/, eval/, trainers/, ...
DEFAULT_CACHE_ROOT = PROJECT_ROOT / ".cache"


def cache_root() -> Path:
    """``$SCALINGDOWN_CACHE``, else ``<project>/.cache``; read at every call so a test can point it elsewhere."""
    configured = os.environ.get("SCALINGDOWN_CACHE")
    return Path(configured).expanduser().resolve() if configured else DEFAULT_CACHE_ROOT


def cache_dir(*parts: str) -> Path:
    """The cache root joined with ``parts``, created."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
