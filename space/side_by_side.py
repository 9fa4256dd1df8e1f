"""Side by side: leaderboard models answer one question in parallel columns, streaming, each checked for correctness.

Only models on the task's leaderboard can be picked, by name: a visitor never passes a path, and remote code
runs only where the Space's owner allows it (``SPACE_TRUST_REMOTE_CODE=1``) or, for ensemble rows, where the repo's
code is byte for byte this project's own ensemble class (vendored with the Space). Loaded models stay in a small LRU
cache, so a model is read from disk once and memory stays bounded however many visitors come.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from datasets_builders.teacher_base import cut_at_stop
from scalingdown.answers import answers_match, extract_answer
from scalingdown.hub import HubTarget
from scalingdown.prompts import STOP_STRINGS, student_messages, student_prompt

MAX_MODELS = 4  # columns on the page
MAX_QUESTION_CHARS = int(os.environ.get("SPACE_MAX_QUESTION_CHARS", 2000))
MAX_NEW_TOKENS = int(os.environ.get("SPACE_MAX_NEW_TOKENS", 512))


class ModelLoadError(RuntimeError):
    """A leaderboard model cannot be loaded here; the message says what was tried."""


@dataclass(frozen=True)
class Contender:
    """A model a visitor may pick: one leaderboard entry (never a path typed by the visitor)."""

    name: str
    role: str
    model_repo: str
    chat: bool
    params_total: int | None
    accuracy: float | None

    @property
    def label(self) -> str:
        params = f"{self.params_total / 1e6:.1f}M" if self.params_total else "? params"
        return f"{self.name} ({self.role}, {params})"


def contenders(rows: list[dict]) -> dict[str, Contender]:
    """The task's leaderboard models by name (teachers first, then by size), accuracy from their cot row."""
    found: dict[str, Contender] = {}
    for row in sorted(rows, key=lambda r: r["variant"] != "cot"):
        if row["model"] in found:
            continue
        found[row["model"]] = Contender(
            name=row["model"],
            role=row["role"],
            model_repo=row.get("model_repo") or row["model"],
            chat=row.get("chat") is not False,  # unknown: try the chat template
            params_total=row.get("params_total"),
            accuracy=row.get("accuracy") if row["status"] == "ok" else None,
        )
    order = sorted(found.values(), key=lambda c: (c.role != "teacher", c.params_total or 0, c.name))
    return {c.name: c for c in order}


def default_picks(choices: dict[str, Contender]) -> list[str]:
    """The best teacher and the best student: the comparison the project is about."""
    picks = []
    for roles in (("teacher",), ("student", "ensemble")):
        members = [c for c in choices.values() if c.role in roles]
        if members:
            picks.append(max(members, key=lambda c: c.accuracy if c.accuracy is not None else -1).name)
    return picks


def model_source(contender: Contender, target: HubTarget) -> str:
    """What ``from_pretrained`` reads for a leaderboard model.

    Students: their repo on the Space's Hub target. Teachers: the folder the eval scored when it exists here,
    else the teacher spec resolved by name (packaged GGUF teachers convert once), else the Hub id.
    """
    if contender.role != "teacher":
        if not target.exists("model", contender.model_repo):
            raise ModelLoadError(
                f"{target.repo_id(contender.model_repo)} is not on the Hub target ({target.kind}: "
                f"{target.location('model', contender.model_repo)})"
            )
        return str(target.local_folder("model", contender.model_repo))
    folder = Path(contender.model_repo).expanduser()
    if (folder / "config.json").is_file():
        return str(folder)
    from datasets_builders.teachers import PACKAGED_TEACHERS, TeacherError, resolve_model_source

    try:
        return resolve_model_source(contender.name)[1]
    except (TeacherError, OSError) as error:
        problem = str(error)
    repo = contender.model_repo
    if repo.count("/") == 1 and not repo.startswith((".", "/", "~")):
        return repo
    if contender.name in PACKAGED_TEACHERS:
        return PACKAGED_TEACHERS[contender.name].hub_id
    raise ModelLoadError(f"teacher {contender.name}: {repo} is not a model folder here, and {problem}")


@dataclass
class LoadedModel:
    name: str
    source: str
    tokenizer: object
    model: object
    chat: bool
    load_s: float


class ModelCache:
    """Loaded models, least recently used evicted beyond ``max_models``; loading is serialised so two visitors
    asking for the same model load it once."""

    def __init__(self, target: HubTarget, max_models: int | None = None, trust_remote_code: bool | None = None):
        self.target = target
        self.max_models = max_models or int(os.environ.get("SPACE_MAX_LOADED_MODELS", MAX_MODELS))
        if trust_remote_code is None:
            trust_remote_code = os.environ.get("SPACE_TRUST_REMOTE_CODE", "") == "1"
        self.trust_remote_code = trust_remote_code
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, contender: Contender) -> LoadedModel:
        with self._lock:
            if contender.name in self._models:
                self._models.move_to_end(contender.name)
                return self._models[contender.name]
            loaded = self._load(contender)
            self._models[contender.name] = loaded
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
            return loaded

    def loaded(self) -> list[str]:
        return list(self._models)

    def _load(self, contender: Contender) -> LoadedModel:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        start = time.perf_counter()
        source = model_source(contender, self.target)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        trust = self.trust_remote_code or (contender.role == "ensemble" and is_own_ensemble_code(source))
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust)
            model = AutoModelForCausalLM.from_pretrained(
                source,
                dtype=torch.float32 if device == "cpu" else "auto",
                trust_remote_code=trust,
            )
        except Exception as error:  # OSError, ValueError (remote code refused), safetensors errors, ...
            hint = "" if trust else " (remote code is off: SPACE_TRUST_REMOTE_CODE=1 allows it)"
            raise ModelLoadError(f"{type(error).__name__} loading {source}: {str(error)[:300]}{hint}") from error
        model = model.to(device).eval()
        chat = contender.chat and tokenizer.chat_template is not None
        return LoadedModel(contender.name, source, tokenizer, model, chat, time.perf_counter() - start)


def is_own_ensemble_code(folder: str) -> bool:
    """Whether a model folder's remote code is exactly this project's ensemble class (``trainers/ensemble_model``),
    the code ``make train METHOD=ensemble`` copies into every ensemble repo: then running it trusts nothing new."""
    from trainers.ensemble_model import CODE_DIR, REMOTE_CODE_FILES

    here = Path(folder)
    code = {p.name for p in here.glob("*.py")}
    if code != set(REMOTE_CODE_FILES):
        return False
    return all((here / name).read_bytes() == (CODE_DIR / name).read_bytes() for name in REMOTE_CODE_FILES)


def render_prompt(loaded: LoadedModel, question: str, choices: list[str] | None, answer_kind: str) -> str:
    """The student prompt through the chat template, or plain (zero-shot) for a base model."""
    if loaded.chat:
        messages = student_messages(question, choices, answer_kind)
        return loaded.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return student_prompt(question, choices, answer_kind) + "\n"


@dataclass
class Answer:
    """One column: what a model has written so far and, once done, whether its final answer is right."""

    model: str
    role: str
    status: str = "queued"  # queued | loading | generating | done | failed
    text: str = ""
    new_tokens: int = 0
    latency_s: float | None = None
    load_s: float | None = None
    predicted: str | None = None
    correct: bool | None = None  # None when no gold answer was given
    error: str | None = None

    @property
    def tokens_per_s(self) -> float | None:
        return self.new_tokens / self.latency_s if self.latency_s else None

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s}


class _LiveText:
    """A ``generate`` streamer that keeps the decoded text and token count in an :class:`Answer`, and a stopping
    criterion that ends generation at a stop string (cheaper than ``stop_strings``, which indexes the vocabulary
    on every call)."""

    def __init__(self, tokenizer, answer: Answer, start: float):
        self.tokenizer, self.answer, self.start = tokenizer, answer, start
        self.ids: list[int] = []
        self.prompt_seen = False
        self.stopped = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        self.stopped = any(stop in text for stop in STOP_STRINGS)
        self.answer.text = cut_at_stop(text, STOP_STRINGS)
        self.answer.new_tokens = len(self.ids)
        self.answer.latency_s = time.perf_counter() - self.start

    def end(self) -> None:
        return None

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.stopped, dtype=torch.bool, device=input_ids.device)


def answer_with(
    cache: ModelCache,
    contender: Contender,
    answer: Answer,
    question: str,
    choices: list[str] | None,
    gold: str | None,
    kind: str,
    max_new_tokens: int,
) -> None:
    """Load (or reuse) one model and stream its greedy answer into ``answer``; a failure is recorded, not raised."""
    import torch

    try:
        answer.status = "loading"
        loaded = cache.get(contender)
        answer.load_s = loaded.load_s
        answer.status = "generating"
        prompt = render_prompt(loaded, question, choices, kind)
        inputs = loaded.tokenizer(prompt, return_tensors="pt", add_special_tokens=not loaded.chat)
        inputs = inputs.to(loaded.model.device)
        tokenizer = loaded.tokenizer
        from transformers import StoppingCriteriaList

        live = _LiveText(tokenizer, answer, time.perf_counter())
        with torch.inference_mode():
            loaded.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                streamer=live,
                stopping_criteria=StoppingCriteriaList([live]),
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )
        answer.latency_s = time.perf_counter() - live.start
        answer.predicted = extract_answer(answer.text, kind, len(choices) if choices else 5)
        answer.correct = answers_match(answer.predicted, gold, kind) if gold else None
        answer.status = "done"
    except Exception as error:  # a model that fails must not take the other columns down
        answer.status = "failed"
        answer.error = str(error) if isinstance(error, ModelLoadError) else f"{type(error).__name__}: {error}"


def compare(
    cache: ModelCache,
    picked: list[Contender],
    question: str,
    choices: list[str] | None,
    gold: str | None,
    answer_kind: str,
    max_new_tokens: int = 128,
    poll_s: float = 0.2,
) -> Iterator[list[Answer]]:
    """Every picked model answers at once, one thread each; yields snapshots of all columns until all are done."""
    answers = [Answer(model=c.name, role=c.role) for c in picked]
    threads = [
        threading.Thread(
            target=answer_with,
            args=(cache, c, a, question, choices, gold, answer_kind, max_new_tokens),
            daemon=True,
        )
        for c, a in zip(picked, answers, strict=True)
    ]
    yield [copy.copy(a) for a in answers]  # the columns appear at once, before any model has loaded
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        yield [copy.copy(a) for a in answers]
        time.sleep(poll_s)
    for thread in threads:
        thread.join()
    yield [copy.copy(a) for a in answers]
