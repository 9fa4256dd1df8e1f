"""What training costs: tokens/s, model FLOPs and MFU against this device's measured matmul peak, and in dollars
(a price per device-hour): per million parameters, per billion tokens, and extrapolated to Chinchilla-optimal.

Shared by every trainer (SFT, KD, pre-training) and the bench scripts, so all report the same figures.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({torch.get_num_threads()} threads)"


def measure_peak_flops(dtype: torch.dtype | None = None) -> dict:
    """Peak matmul FLOP/s of this device now: the best of three square-matmul probes, taken by the run that uses it.

    Nothing is remembered between runs, so a card's MFU depends on its own run only.
    """
    cuda = torch.cuda.is_available()
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
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
    return {"flops": 2 * n**3 / best, "probe": f"{n}x{n} {str(dtype).removeprefix('torch.')} matmul"}


def training_cost(params_total: int, tokens: int, seconds: float, peak: dict | None = None) -> dict:
    """tokens/s, model FLOPs (6·N·tokens) and MFU against ``peak`` (default: probed now)."""
    peak = peak or measure_peak_flops()
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


# -- what it costs in dollars ------------------------------------------------------------------------------

# List prices per device-hour (USD), all from one public price list so that CPU and GPUs are priced alike:
# Hugging Face Spaces hardware, https://huggingface.co/docs/hub/spaces-gpus ("Hourly Price", at the time of
# writing): "CPU Upgrade" 8 vCPU $0.03/h (so a core-hour is $0.03/8), "Nvidia A10G - small" $1.00/h,
# "Nvidia A100 - large" $4.00/h, "Nvidia H100" $10.00/h. Cloud prices differ by provider and change often:
# pass --price_per_device_hour with your own.
DEVICE_HOUR_PRICES = {"cpu-core": 0.03 / 8, "a10g": 1.00, "a100": 4.00, "h100": 10.00}
PRICE_SOURCE = "Hugging Face Spaces hardware list price (huggingface.co/docs/hub/spaces-gpus)"
# Compute-optimal tokens per parameter (Hoffmann et al. 2022, "Chinchilla"). Chinchilla counts every parameter,
# embeddings included (Kaplan et al. counted non-embedding ones; Pearce & Song 2024 trace the two papers' different
# answers mostly to that), so N here is the total.
CHINCHILLA_TOKENS_PER_PARAM = 20


@dataclass(frozen=True)
class DevicePrice:
    """What one hour of a run's hardware costs: ``devices`` billed units (GPUs, or CPU cores) at one price each."""

    kind: str  # a key of DEVICE_HOUR_PRICES, or whatever the user named
    per_device_hour: float | None  # None: an accelerator with no list price here and none given
    devices: int
    source: str

    @property
    def per_hour(self) -> float | None:
        return None if self.per_device_hour is None else self.per_device_hour * self.devices

    def describe(self) -> str:
        if self.per_device_hour is None:
            return f"{self.kind}: no price known (pass --price_per_device_hour)"
        return f"{self.devices} x {self.kind} at ${self.per_device_hour:.4g}/device-hour ({self.source})"


def detect_device_kind() -> str:
    """``cpu-core`` without CUDA; else the GPU's family in DEVICE_HOUR_PRICES, or its own name if unlisted."""
    if not torch.cuda.is_available():
        return "cpu-core"
    name = torch.cuda.get_device_name(0).lower()
    for kind in ("h100", "a100", "a10g"):
        if kind in name:
            return kind
    return name


def device_price(kind: str | None = None, per_device_hour: float | None = None, processes: int = 1) -> DevicePrice:
    """The price of this run's hardware: a given price wins over the list price of ``kind`` (default: detected).

    GPUs are billed one per process; on a CPU every core the processes compute on is a billed device.
    """
    kind = kind or detect_device_kind()
    if kind == "cpu-core":
        devices = min(os.cpu_count() or 1, torch.get_num_threads() * processes)
    else:
        devices = processes
    if per_device_hour is not None:
        return DevicePrice(kind, per_device_hour, devices, "given with --price_per_device_hour")
    return DevicePrice(kind, DEVICE_HOUR_PRICES.get(kind), devices, PRICE_SOURCE)


def dollar_cost(params_total: int, tokens: int, seconds: float, price: DevicePrice) -> dict:
    """Dollars of a run and what they buy: per million parameters, per billion tokens, and the same throughput
    extrapolated to the Chinchilla-optimal token count (20 tokens per parameter)."""
    tokens_per_second = tokens / seconds if seconds else 0.0
    chinchilla_tokens = CHINCHILLA_TOKENS_PER_PARAM * params_total
    chinchilla_seconds = chinchilla_tokens / tokens_per_second if tokens_per_second else float("inf")
    figures = {
        "device_kind": price.kind,
        "devices": price.devices,
        "price_per_device_hour": price.per_device_hour,
        "price_source": price.source,
        "chinchilla_tokens": chinchilla_tokens,
        "chinchilla_fraction": tokens / chinchilla_tokens,
        "chinchilla_seconds": chinchilla_seconds,
    }
    if price.per_hour is None:
        return figures | dict.fromkeys(
            ("dollars", "dollars_per_million_params", "dollars_per_billion_tokens", "chinchilla_dollars"), None
        )
    dollars = price.per_hour * seconds / 3600
    chinchilla_dollars = price.per_hour * chinchilla_seconds / 3600
    return figures | {
        "dollars": dollars,
        "dollars_per_million_params": dollars / (params_total / 1e6),
        "dollars_per_billion_tokens": price.per_hour / 3600 / tokens_per_second * 1e9 if tokens_per_second else None,
        "chinchilla_dollars": chinchilla_dollars,
        "chinchilla_dollars_per_million_params": chinchilla_dollars / (params_total / 1e6),
    }


def format_dollars(value: float | None) -> str:
    """``$1,234``, ``$12.34``, ``$0.0123``: three significant figures below a dollar."""
    if value is None:
        return "n/a"
    if value == float("inf"):
        return "inf"
    return f"${value:,.0f}" if value >= 1000 else f"${value:.2f}" if value >= 1 else f"${value:.3g}"


def format_duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.1 h``, ``4.0 days``, ``1.3 years``."""
    if seconds == float("inf"):
        return "inf"
    for unit, size, at_least in (("years", 365 * 86400, 1), ("days", 86400, 2), ("h", 3600, 1), ("min", 60, 1)):
        if seconds >= at_least * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
