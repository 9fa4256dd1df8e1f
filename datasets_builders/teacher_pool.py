"""A transformers teacher's generation split across worker processes, one thread each.

On a CPU, batched decoding of a small model is bound by per-step overhead and memory traffic rather than arithmetic,
so one process's two OpenMP threads leave the cores half idle; independent single-threaded decoders, each with its
own copy of the model, keep every core busy (``bench/bench_generation.py`` measures both side by side). Workers are
spawned once per teacher and load the model once; each call's prompts are dealt out by length, so every worker gets
a similar share of long and short prompts, and the answers come back in the callers' order.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import torch

from datasets_builders.teacher_base import Generation, GenerationSettings

_teacher = None  # the worker process's own TransformersTeacher


def resolve_workers(workers: int, device: str) -> int:
    """``workers`` with 0 read as one per core; always 1 off the CPU (a GPU is one device)."""
    if device != "cpu":
        return 1
    return workers or torch.get_num_threads()


def threads_per_worker(workers: int) -> int:
    """The cores this process's torch uses, shared out among ``workers`` processes."""
    return max(1, torch.get_num_threads() // workers)


def _start(name: str, source: str, dtype: str, threads: int) -> None:
    from datasets_builders.teachers import TransformersTeacher

    global _teacher
    torch.set_num_threads(threads)
    _teacher = TransformersTeacher(name, source, dtype=dtype, device="cpu")


def _generate(encoded: list[list[int]], settings: GenerationSettings) -> list[Generation]:
    return _teacher.generate_ids(encoded, settings)


class TeacherPool:
    """``workers`` processes, each holding the teacher, started on the first call that splits."""

    def __init__(self, name: str, source: str, dtype: str, workers: int):
        self.name, self.source, self.dtype, self.workers = name, source, dtype, workers
        self._executor: ProcessPoolExecutor | None = None

    def executor(self) -> ProcessPoolExecutor:
        if self._executor is None:
            threads = threads_per_worker(self.workers)
            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),  # fork after OpenMP has started can hang
                initializer=_start,
                initargs=(self.name, self.source, self.dtype, threads),
            )
        return self._executor

    def generate(self, encoded: list[list[int]], settings: GenerationSettings) -> list[Generation]:
        """Answers for tokenized prompts, in order."""
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        count = min(self.workers, -(-len(encoded) // settings.batch_size))  # no worker gets less than a batch
        shares = [order[k::count] for k in range(count)]
        single = replace(settings, workers=1)
        futures = [self.executor().submit(_generate, [encoded[i] for i in share], single) for share in shares]
        results: list[Generation | None] = [None] * len(encoded)
        for share, future in zip(shares, futures, strict=True):
            for index, generation in zip(share, future.result(), strict=True):
                results[index] = generation
        return results

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None
