"""What training costs: tokens/s, model FLOPs and MFU against this device's measured matmul peak.

Shared by every trainer (SFT, KD, pre-training) and the bench scripts, so all report the same figures.
"""

from __future__ import annotations

import json
import time

import torch

from scalingdown.cache import cache_dir


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({torch.get_num_threads()} threads)"


def measure_peak_flops(dtype: torch.dtype | None = None) -> dict:
    """Peak matmul FLOP/s of this device: a square-matmul probe, keeping the best figure ever seen per device.

    A probe taken while other work shares the device reads low, so each call probes again (well under a
    second) and the cache only ever goes up; MFU figures are then against the device's real peak.
    """
    cuda = torch.cuda.is_available()
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    key = f"{device_name()}|{dtype}"
    cache = cache_dir("bench") / "peak_flops.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    n, reps = (8192, 20) if cuda else (1024, 8)
    a = torch.randn(n, n, dtype=dtype, device="cuda" if cuda else "cpu")
    b = torch.randn_like(a)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(3):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        if cuda:
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / reps)
    result = {"flops": 2 * n**3 / best, "probe": f"{n}x{n} {str(dtype).removeprefix('torch.')} matmul"}
    if key in known and known[key]["flops"] >= result["flops"]:
        return known[key]
    known[key] = result
    cache.write_text(json.dumps(known, indent=1))
    return result


def training_cost(params_total: int, tokens: int, seconds: float) -> dict:
    """tokens/s, model FLOPs (6·N·tokens) and MFU against the measured peak."""
    peak = measure_peak_flops()
    flops = 6 * params_total * tokens
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "model_flops": flops,
        "mfu": flops / seconds / peak["flops"] if seconds else 0.0,
        "peak_flops": peak["flops"],
        "peak_probe": peak["probe"],
        "device": device_name(),
    }
