"""The generation bench's smoke mode runs in the suite, so the bench cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_smoke_times_every_path_and_ends_with_the_speed_up(tiny_teacher_dir):
    done = subprocess.run(
        [sys.executable, "bench/bench_generation.py", "--smoke", "--teacher", str(tiny_teacher_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    paths = [line for line in lines if " tok/s (" in line]
    # previous; head run once at batch 16 in one process, its KV cache copied to each row and held once; push-data's
    # own (smoke: batch 4, worker processes)
    assert len(paths) == 4 and paths[-1].startswith("push-data: ")
    assert "copied to each row" in paths[1] and "shared by all rows" in paths[2]
    # The previous path is the reference: identical to itself; every path generated tokens.
    assert "identical to previous: 6/6" in paths[0]
    assert all(float(re.search(r"= +([\d.]+) tok/s", line).group(1)) > 0 for line in paths)
    assert re.fullmatch(
        r"speed-up of push-data's path over the previous one: [\d.]+x \(\d+% of the FLOP limit\)", lines[-1]
    )
