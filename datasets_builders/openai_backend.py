"""A teacher served by an OpenAI-compatible endpoint (vLLM, TGI, llama.cpp server, ``transformers serve``).

    teacher = OpenAITeacher("qwen-72b", base_url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-72B-Instruct")
    generations = teacher.generate(prompts, GenerationSettings(max_new_tokens=256))

Start the server first, e.g. ``vllm serve Qwen/Qwen2.5-72B-Instruct`` or ``transformers serve <model or folder>``.
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

from datasets_builders.teacher_base import Generation, GenerationSettings, Teacher, TeacherPrompt, cut_at_stop

logger = logging.getLogger(__name__)

# Local servers accept any key, but the client refuses to start without one.
PLACEHOLDER_API_KEY = "EMPTY"

TOKENS_FROM_USAGE = "usage.completion_tokens reported by the server"
TOKENS_ESTIMATED = "estimated from the text (max of whitespace words and characters/4): the server sent no usage"


class TeacherRequestError(RuntimeError):
    """A request to the teacher server failed for one prompt after the client's retries."""


class TeacherUnreachableError(ConnectionError):
    """Nothing answers at the teacher's ``base_url``."""


def estimate_num_tokens(text: str) -> int:
    """A rough token count for servers that report no usage: whitespace words, or characters/4 if more."""
    return max(len(text.split()), math.ceil(len(text) / 4))


class OpenAITeacher(Teacher):
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
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.name = name
        self.base_url = base_url
        self.model = model
        self.uses_chat = chat
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        # Server-specific fields the OpenAI schema lacks: vLLM's top_k, or for `transformers serve`, whose
        # temperature > 0 does not turn sampling on, {"generation_config": '{"do_sample": true}'}.
        self.extra_body = dict(extra_body or {})
        self.num_tokens_source = TOKENS_FROM_USAGE
        # The key lives only inside the client: never in an attribute of ours, describe() or repr().
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or PLACEHOLDER_API_KEY,
            timeout=timeout,
            max_retries=max_retries,
        )

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
        if not prompts:
            return []
        workers = min(self.max_concurrency, len(prompts))
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"teacher-{self.name}")
        try:
            futures = [executor.submit(self._generate_one, i, p, settings) for i, p in enumerate(prompts)]
            return [future.result() for future in futures]
        finally:
            # On the first failure, requests not yet sent are dropped rather than waited for.
            executor.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self._client.close()

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
        try:
            if self.uses_chat:
                response = self._client.chat.completions.create(messages=prompt.messages, **kwargs)
                text = response.choices[0].message.content if response.choices else None
            else:
                response = self._client.completions.create(prompt=prompt.text, **kwargs)
                text = response.choices[0].text if response.choices else None
        except openai.APITimeoutError as error:
            raise TeacherRequestError(
                f"{self.name}: request for prompt {index} timed out after {self.timeout}s "
                f"({self.max_retries} retries) at {self.base_url}"
            ) from error
        except openai.APIConnectionError as error:
            raise TeacherUnreachableError(
                f"{self.name}: cannot reach an OpenAI-compatible server at {self.base_url} ({error}). "
                f"Start one serving {self.model!r} first, e.g. `transformers serve {self.model} --port PORT` or "
                f"`vllm serve {self.model} --port PORT`, and check that base_url ends in /v1."
            ) from error
        except openai.APIStatusError as error:
            raise TeacherRequestError(
                f"{self.name}: request for prompt {index} failed with HTTP {error.status_code} "
                f"after {self.max_retries} retries at {self.base_url}: {_error_detail(error)}"
            ) from error
        except openai.APIError as error:
            raise TeacherRequestError(f"{self.name}: request for prompt {index} failed: {error}") from error

        text = cut_at_stop(text or "", settings.stop)
        usage = getattr(response, "usage", None)
        if usage is not None and usage.completion_tokens is not None:
            return Generation(text=text, num_tokens=usage.completion_tokens)
        if self.num_tokens_source != TOKENS_ESTIMATED:
            logger.warning("%s: the server reports no token usage; num_tokens are estimated from the text", self.name)
            self.num_tokens_source = TOKENS_ESTIMATED
        return Generation(text=text, num_tokens=min(estimate_num_tokens(text), settings.max_new_tokens))


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
