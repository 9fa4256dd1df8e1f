"""A teacher served by an OpenAI-compatible endpoint (vLLM, TGI, llama.cpp server, ``transformers serve``).

    teacher = OpenAITeacher("qwen-72b", base_url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-72B-Instruct")
    generations = teacher.generate(prompts, GenerationSettings(max_new_tokens=256))

Start the server first, e.g. ``vllm serve Qwen/Qwen2.5-72B-Instruct`` or ``transformers serve <model or folder>``.

Endpoint logits. ``EndpointScorer`` is the served counterpart of ``datasets_builders.logits.TeacherScorer``: it
gets a teacher's top-k log-probs at every assistant token (``make push-data LOGITS=k`` with an ``openai:`` entry
in ``--logits_teachers``) without loading the teacher here. Each tokenized sequence is sent, as token ids, to the
legacy completions API with ``echo=True, logprobs=k, max_tokens=1``; vLLM then scores the prompt itself and
returns, per prompt position, the k best next tokens (plus the actual one), keyed ``token_id:<id>`` when asked
with ``return_tokens_as_token_ids`` (string keys from servers that ignore it are mapped through the tokenizer).
vLLM refuses more than ``--max-logprobs`` (20 by default), so serve it as ``vllm serve <model> --max-logprobs
<k>``; ``--logits_tokenizer`` must name the server's tokenizer, which must be the student's.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import openai

from datasets_builders.logits import LogitsError, tokenizer_identity
from datasets_builders.teacher_base import Generation, GenerationSettings, Teacher, TeacherPrompt, cut_at_stop

logger = logging.getLogger(__name__)

# Local servers accept any key, but the client refuses to start without one.
PLACEHOLDER_API_KEY = "EMPTY"

TOKENS_FROM_USAGE = "usage.completion_tokens reported by the server"
TOKENS_ESTIMATED = "estimated from the text (max of whitespace words and characters/4): the server sent no usage"

TOKEN_ID_KEY = re.compile(r"token_id:(-?\d+)")  # vLLM's key for a token when return_tokens_as_token_ids is set
LOGPROBS_CAP = re.compile(r"logprobs.*max(?:imum)? allowed:?\s*(-?\d+)", re.IGNORECASE | re.DOTALL)

T = TypeVar("T")
R = TypeVar("R")


class TeacherRequestError(RuntimeError):
    """A request to the teacher server failed for one prompt after the client's retries."""


class TeacherUnreachableError(ConnectionError):
    """Nothing answers at the teacher's ``base_url``."""


class EndpointLogitsUnreachableError(LogitsError, TeacherUnreachableError):
    """Nothing answers at a logits teacher's ``base_url`` (caught as either parent)."""


def estimate_num_tokens(text: str) -> int:
    """A rough token count for servers that report no usage: whitespace words, or characters/4 if more."""
    return max(len(text.split()), math.ceil(len(text) / 4))


class _Endpoint:
    """What every endpoint client shares: the OpenAI client (the only holder of the API key), bounded concurrent
    requests answered in order, and transport failures turned into errors that say where and what to start."""

    unreachable_error: type[Exception] = TeacherUnreachableError

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        api_key: str | None,
        max_concurrency: int,
        timeout: float,
        max_retries: int,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.name = name
        self.base_url = base_url
        self.model = model
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        # The key lives only inside the client: never in an attribute of ours, describe() or repr().
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or PLACEHOLDER_API_KEY,
            timeout=timeout,
            max_retries=max_retries,
        )

    def close(self) -> None:
        self._client.close()

    def _in_order(self, work: Callable[[int, T], R], items: list[T]) -> list[R]:
        """``work(i, item)`` for every item, ``max_concurrency`` at a time, results in the items' order."""
        if not items:
            return []
        workers = min(self.max_concurrency, len(items))
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"teacher-{self.name}")
        try:
            futures = [executor.submit(work, i, item) for i, item in enumerate(items)]
            return [future.result() for future in futures]
        finally:
            # On the first failure, requests not yet sent are dropped rather than waited for.
            executor.shutdown(wait=True, cancel_futures=True)

    def _request(
        self,
        what: str,
        call: Callable[[], Any],
        serve_hint: str | None = None,
        status_error: Callable[[openai.APIStatusError], Exception | None] | None = None,
    ) -> Any:
        """``call()``, with the client's failures re-raised as errors naming ``what`` (e.g. "prompt 3").

        ``serve_hint`` says how to start a suitable server; ``status_error(error)`` may return a more specific
        error for an HTTP error status, or None."""
        if serve_hint is None:
            serve_hint = f"`transformers serve {self.model} --port PORT` or `vllm serve {self.model} --port PORT`"
        try:
            return call()
        except openai.APITimeoutError as error:
            raise TeacherRequestError(
                f"{self.name}: request for {what} timed out after {self.timeout}s "
                f"({self.max_retries} retries) at {self.base_url}"
            ) from error
        except openai.APIConnectionError as error:
            raise self.unreachable_error(
                f"{self.name}: cannot reach an OpenAI-compatible server at {self.base_url} ({error}). "
                f"Start one serving {self.model!r} first, e.g. {serve_hint}, "
                "and check that base_url ends in /v1."
            ) from error
        except openai.APIStatusError as error:
            specific = status_error(error) if status_error else None
            if specific is not None:
                raise specific from error
            raise TeacherRequestError(
                f"{self.name}: request for {what} failed with HTTP {error.status_code} "
                f"after {self.max_retries} retries at {self.base_url}: {_error_detail(error)}"
            ) from error
        except openai.APIError as error:
            raise TeacherRequestError(f"{self.name}: request for {what} failed: {error}") from error


class OpenAITeacher(_Endpoint, Teacher):
    """Sends each prompt as one request (chat or legacy completions), ``max_concurrency`` at a time."""

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        api_key: str | None = None,
        chat: bool = True,
        max_concurrency: int = 8,
        timeout: float = 300.0,
        max_retries: int = 2,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name, base_url, model, api_key, max_concurrency, timeout, max_retries)
        self.uses_chat = chat
        # Server-specific fields the OpenAI schema lacks: vLLM's top_k, or for `transformers serve`, whose
        # temperature > 0 does not turn sampling on, {"generation_config": '{"do_sample": true}'}.
        self.extra_body = dict(extra_body or {})
        self.num_tokens_source = TOKENS_FROM_USAGE

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r}, "
            f"chat={self.uses_chat})"
        )

    def describe(self) -> dict[str, str]:
        """Name, backend, endpoint, served model and where token counts come from; never the API key."""
        return {
            "name": self.name,
            "backend": "openai-compatible endpoint",
            "source": f"{self.model} at {self.base_url}",
            "base_url": self.base_url,
            "model": self.model,
            "parameters": "unknown (served)",
            "prompt_format": "chat completions" if self.uses_chat else "completions, few-shot",
            "api": "chat.completions" if self.uses_chat else "completions",
            "num_tokens": self.num_tokens_source,
        }

    def generate(self, prompts: list[TeacherPrompt], settings: GenerationSettings) -> list[Generation]:
        """Answers for ``prompts`` in the same order; requests run concurrently, bounded by ``max_concurrency``."""
        return self._in_order(lambda i, prompt: self._generate_one(i, prompt, settings), prompts)

    def _request_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature if settings.do_sample else 0.0,
            "top_p": settings.top_p,
            "seed": settings.seed,
        }
        if settings.stop:
            kwargs["stop"] = list(settings.stop)
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        return kwargs

    def _generate_one(self, index: int, prompt: TeacherPrompt, settings: GenerationSettings) -> Generation:
        kwargs = self._request_kwargs(settings)
        if self.uses_chat:
            response = self._request(
                f"prompt {index}", lambda: self._client.chat.completions.create(messages=prompt.messages, **kwargs)
            )
            text = response.choices[0].message.content if response.choices else None
        else:
            response = self._request(
                f"prompt {index}", lambda: self._client.completions.create(prompt=prompt.text, **kwargs)
            )
            text = response.choices[0].text if response.choices else None

        text = cut_at_stop(text or "", settings.stop)
        usage = getattr(response, "usage", None)
        if usage is not None and usage.completion_tokens is not None:
            return Generation(text=text, num_tokens=usage.completion_tokens)
        if self.num_tokens_source != TOKENS_ESTIMATED:
            logger.warning("%s: the server reports no token usage; num_tokens are estimated from the text", self.name)
            self.num_tokens_source = TOKENS_ESTIMATED
        return Generation(text=text, num_tokens=min(estimate_num_tokens(text), settings.max_new_tokens))


class EndpointScorer(_Endpoint):
    """A served teacher that scores tokenized conversations: the same interface as ``TeacherScorer``.

    ``score`` sends each sequence as one completions request (``echo``, ``logprobs=k``, token ids in and out),
    ``max_concurrency`` at a time, and reads the prompt's top-k log-probs over the assistant span.
    """

    unreachable_error = EndpointLogitsUnreachableError

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        tokenizer=None,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout: float = 300.0,
        max_retries: int = 2,
    ) -> None:
        super().__init__(name, base_url, model, api_key, max_concurrency, timeout, max_retries)
        # ``tokenizer``: a loaded tokenizer, or what to load one from (default: the served model's name)
        if tokenizer is None or isinstance(tokenizer, str):
            tokenizer = load_endpoint_tokenizer(tokenizer or model)
        self.tokenizer = tokenizer
        self._vocab: dict[str, int] | None = None  # token string -> id, built when a server sends strings

    @classmethod
    def from_spec(cls, spec: str, tokenizer: str | None = None, **kwargs) -> EndpointScorer:
        """A scorer for ``openai:<model>@<base_url>``; ``tokenizer`` defaults to the served model's name."""
        from datasets_builders.teachers import _endpoint, teacher_name

        model, base_url = _endpoint(spec)
        return cls(teacher_name(spec), base_url, model, tokenizer=tokenizer, **kwargs)  # key: OPENAI_API_KEY

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"

    def identity(self) -> dict:
        return tokenizer_identity(self.tokenizer, self.name)

    def score(self, sequences: list[dict], k: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per sequence, ``(ids [n, k], logprobs [n, k] float32, written [n])``: row i is the teacher's top-k, best
        first, for token ``input_ids[span_start + i]`` given the tokens before it; ``written`` that token's
        log-prob."""
        return self._in_order(lambda i, sequence: self._score_one(i, sequence, k), sequences)

    def _score_one(self, index: int, sequence: dict, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        response = self._request(
            f"sequence {index}",
            lambda: self._client.completions.create(
                model=self.model,
                prompt=list(sequence["input_ids"]),
                max_tokens=1,
                echo=True,
                logprobs=k,
                temperature=0.0,
                extra_body={"return_tokens_as_token_ids": True},
            ),
            serve_hint=f"`vllm serve {self.model} --max-logprobs {k} --port PORT`",
            status_error=lambda error: self._cap_error(error, k),
        )
        start, end = sequence["span_start"], sequence["span_end"]
        logprobs = response.choices[0].logprobs if response.choices else None
        positions = getattr(logprobs, "top_logprobs", None) or []
        if len(positions) < end or any(not positions[t] for t in range(start, end)):
            raise LogitsError(
                f"{self.name}: {self.base_url} returned no prompt log-probs (top_logprobs of the echoed prompt) "
                f"for {self.model!r}: this endpoint does not offer them. Serve the teacher with "
                f"`vllm serve {self.model} --max-logprobs {k}`, or score with a transformers teacher "
                "(--logits_teachers <model folder, Hub id or .gguf>)."
            )
        # vLLM sends the k best plus the prompt's own token when that is not among them, so a server that caps
        # the k best at c < k sends c or c + 1 entries. The cap shows where the own token is not among the best:
        # somewhere in any real prompt (the entries other than it reach k), unless k is most of the vocabulary.
        tokens = sequence["input_ids"]
        offered = max(self._others(positions[t] or {}, tokens[t]) for t in range(1, min(len(positions), len(tokens))))
        cap = min(offered, *(len(positions[t]) for t in range(start, end)))
        if cap < k:
            raise LogitsError(
                f"{self.name}: {self.base_url} returned {cap} alternatives per token for sequence {index}, fewer "
                f"than LOGITS={k}: the server caps log-probs at {cap}. Use a smaller LOGITS (at most {cap}), or "
                f"restart it with a higher cap: `vllm serve {self.model} --max-logprobs {k}`."
            )
        ids = np.empty((end - start, k), dtype=np.int64)
        values = np.empty((end - start, k), dtype=np.float32)
        for row, t in enumerate(range(start, end)):
            best = sorted(positions[t].items(), key=lambda item: -item[1])[:k]
            ids[row] = [self._token_id(key) for key, _ in best]
            values[row] = [value for _, value in best]
        written = np.asarray((logprobs.token_logprobs or [])[start:end], dtype=np.float32)
        if len(written) != end - start:
            raise LogitsError(f"{self.name}: {self.base_url} returned no token_logprobs for the echoed prompt")
        return ids, values, written

    def _others(self, alternatives: dict[str, float], token: int) -> int:
        """How many of a position's alternatives are not the prompt's own token ``token``."""
        own = f"token_id:{token}" in alternatives or self.tokenizer.convert_ids_to_tokens(token) in alternatives
        return len(alternatives) - own

    def _cap_error(self, error: openai.APIStatusError, k: int) -> LogitsError | None:
        """vLLM rejects ``logprobs`` above ``--max-logprobs`` with HTTP 400 ("... max allowed: 20")."""
        cap = LOGPROBS_CAP.search(_error_detail(error))
        if error.status_code != 400 or cap is None:
            return None
        return LogitsError(
            f"{self.name}: {self.base_url} refuses LOGITS={k} log-probs per token: the server caps them at "
            f"{cap.group(1)} ({_error_detail(error)}). Use a smaller LOGITS (at most {cap.group(1)}), or restart it "
            f"with a higher cap: `vllm serve {self.model} --max-logprobs {k}`."
        )

    def _token_id(self, key: str) -> int:
        """The id behind a top_logprobs key: ``token_id:<id>``, or a token string mapped by the tokenizer."""
        match = TOKEN_ID_KEY.fullmatch(key)
        if match:
            return int(match.group(1))
        if self._vocab is None:
            self._vocab = self.tokenizer.get_vocab()
        token_id = self._vocab.get(key)
        if token_id is None:
            raise LogitsError(
                f"{self.name}: {self.base_url} keyed a log-prob by the token string {key!r}, which is not a token "
                f"of the tokenizer {self.tokenizer.name_or_path!r}. Serve with token ids "
                f"(`vllm serve {self.model} --return-tokens-as-token-ids`, or a vLLM that honours the request's "
                "return_tokens_as_token_ids), or set --logits_tokenizer to the tokenizer the server uses."
            )
        return int(token_id)


def load_endpoint_tokenizer(spec: str):
    """The tokenizer of a served teacher: a packaged teacher's name, a .gguf file, a folder, or a Hub id."""
    from transformers import AutoTokenizer

    from datasets_builders.teachers import PACKAGED_TEACHERS, resolve_model_source

    source = resolve_model_source(spec)[1] if spec in PACKAGED_TEACHERS or spec.endswith(".gguf") else spec
    folder = Path(source).expanduser()
    try:  # a folder needs only the tokenizer files; anything else is a Hub id
        return AutoTokenizer.from_pretrained(str(folder) if folder.exists() else source)
    except (OSError, ValueError) as error:
        raise LogitsError(
            f"cannot load the tokenizer {spec!r} of an endpoint logits teacher ({error}). Set --logits_tokenizer "
            "to the tokenizer the server uses: a model folder, a Hub id (downloaded once online) or a packaged "
            "teacher name."
        ) from error


def _error_detail(error: openai.APIStatusError) -> str:
    """The server's own explanation (FastAPI ``detail``, OpenAI ``error.message``) rather than the bare status."""
    body = error.body
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message") or body.get("error")
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        if detail:
            return str(detail)
    return error.message
