"""Where ScalingDown keeps things it can rebuild: converted teachers and in-progress build shards."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$SCALINGDOWN_CACHE`` (default ``~/.cache/scalingdown``) joined with ``parts``, created."""
    root = Path(os.environ.get("SCALINGDOWN_CACHE") or Path.home() / ".cache" / "scalingdown").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
