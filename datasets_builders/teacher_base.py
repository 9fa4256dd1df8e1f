"""What every teacher backend offers the rationale builder: batched generation of prompts."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from scalingdown.prompts import TEACHER_STOP_STRINGS


@dataclass
class TeacherPrompt:
    """One request in both forms: chat ``messages`` for instruct teachers, plain ``text`` for base ones."""

    messages: list[dict[str, str]]
    text: str


@dataclass
class GenerationSettings:
    """Decoding settings recorded in the dataset card. Greedy unless ``do_sample``."""

    max_new_tokens: int = 192
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 42
    batch_size: int = 16
    stop: list[str] = field(default_factory=lambda: list(TEACHER_STOP_STRINGS))
    # transformers, or ctranslate2 (datasets_builders/ctranslate2_backend.py: the same prompts and decoding, faster
    # on CPU). Endpoints ignore it.
    backend: str = "transformers"
    # int8 weights: ctranslate2's own, or (transformers, CPU) linear layers quantised dynamically; outputs may
    # differ slightly from float32's.
    int8: bool = False
    # the worked examples every prompt opens with run once (shared_prefix); transformers keeps their KV cache once
    # for all rows where the model allows (head_kv "shared": datasets_builders/shared_head.py), else a copy per row
    share_head: bool = True
    head_kv: str = "shared"
    # transformers: its continuous batching (a finished row is refilled at once, prompts that open alike share their
    # KV blocks) instead of one generate() per batch_size prompts; batch_tokens bounds one forward pass's tokens.
    continuous_batching: bool = False
    batch_tokens: int = 256
    # transformers on CPU: each call's prompts split across this many processes of one thread each
    # (datasets_builders/teacher_pool.py); 0 = one per core (torch's thread count), 1 = in this process.
    workers: int = 1

    def __post_init__(self):
        if self.head_kv not in ("shared", "copied"):
            raise ValueError(f"head_kv={self.head_kv!r}: use 'shared' or 'copied'")


@dataclass
class Generation:
    """A teacher's answer to one prompt, with the token count used for throughput figures."""

    text: str
    num_tokens: int


class Teacher(ABC):
    """A named teacher. ``uses_chat`` decides which form of a :class:`TeacherPrompt` it is sent."""

    name: str
    uses_chat: bool

    @abstractmethod
    def generate(self, prompts: list[TeacherPrompt], settings: GenerationSettings) -> list[Generation]:
        """Answers for ``prompts`` in the same order."""

    def describe(self) -> dict[str, str]:
        """What the dataset card records about this teacher (never a secret)."""
        return {"name": self.name, "backend": type(self).__name__}

    def close(self) -> None:
        """Release memory or connections."""
        return None


def cut_at_stop(text: str, stop: list[str]) -> str:
    """Text up to the first stop string. Servers and ``generate()`` differ on whether they keep it; we never do."""
    cut = min((text.find(s) for s in stop if s and s in text), default=len(text))
    return text[:cut].strip()


def shared_prefix(prompts: list[list[int]], at_least: int = 16) -> list[int]:
    """The token ids every prompt starts with, leaving each at least one token of its own; [] when under
    ``at_least`` tokens (not worth a cached state)."""
    shortest = min(len(row) for row in prompts) - 1
    n = 0
    while n < shortest and all(row[n] == prompts[0][n] for row in prompts):
        n += 1
    return prompts[0][:n] if n >= at_least else []
