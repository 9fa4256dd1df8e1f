"""Logit distillation (``make train METHOD=kd``): alpha·KD + (1-alpha)·NLL on the rationale tokens.

    make push-data LOGITS=16                        # the teacher's top-16 log-probs, stored once
    make train METHOD=kd SIZE=8M ALPHA=0.5 KD_LOSS=fkl TEMPERATURE=1
    make train METHOD=kd SIZE=8M KD_SOURCE=online   # the same loss with the teacher loaded, for comparison

Offline (default), the student trains on a ``logits-<teacher>`` config of the dataset repo: the token sequences
the teacher scored and its top-k per assistant token, streamed by ``datasets``; the teacher is never loaded.
Online, the teacher runs beside the student on the same sequences (``tokenize_conversation`` of the ``default``
rows) and its top-``kd_top_k`` (0 = whole vocabulary) goes through the same loss. The losses and the tail
handling are in ``trainers.kd_losses``.

Offline, every ``logits-*`` config of the repo teaches (``--kd_teacher_weights`` picks and weighs them): one that
shares the student's tokenizer through the losses above, the others through a cross-tokenizer loss on text-aligned
tokens (``--kd_cross_loss``, ``trainers.cross_tokenizer``); the KD term is their weighted mean. An online teacher
must share the student's tokenizer: checked before training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from datasets import Dataset, get_dataset_config_names, load_dataset

from datasets_builders.logits import LogitsError, teacher_logprobs, tokenize_conversation, tokenizer_identity
from trainers.chunked_kd import DEFAULT_CHUNK_TOKENS, CrossTargets, DistillationTargets, KDObjective, online_top_k
from trainers.cross_tokenizer import CROSS_LOSSES, align, char_ends, vocabulary_map
from trainers.kd_losses import KD_LOSSES, TAILS
from trainers.student_trainer import StudentSFTTrainer, compact_head_supported, labelled_hidden_states

logger = logging.getLogger("trainers.kd")

KD_SOURCES = ("offline", "online")
LOGITS_PREFIX = "logits-"
# the stored top-k in either layout (datasets_builders.logits: gaps now, float16 log-probs before)
TEACHER_COLUMNS = ("topk_ids", "top_logprob", "logprob_gaps", "logprob_step", "topk_logprobs", "span_start", "k")
CROSS_PREFIX = "cross"  # cross{i}_{first,length,ids,logprobs,rest}: teacher i's text-aligned groups (align_row)
CROSS_FIELDS = ("first", "length", "ids", "logprobs", "rest")


@dataclass
class DistillationArguments:
    """The ``kd`` method's options (ignored by the other methods)."""

    alpha: float = field(default=0.5, metadata={"help": "Weight of the KD term; 1 - alpha weighs the NLL term."})
    kd_loss: str = field(default="fkl", metadata={"help": f"One of {KD_LOSSES} (forward/reverse KL, TVD, BiLD)."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of the KD term (BiLD: 3)."})
    kd_tail: str = field(
        default="bucket",
        metadata={"help": f"Mass outside the teacher's top-k: {TAILS} (see trainers/kd_losses.py)."},
    )
    bild_k: int = field(default=8, metadata={"help": "BiLD: how many top logits are compared pairwise."})
    kd_source: str = field(default="offline", metadata={"help": f"One of {KD_SOURCES}."})
    logits_config: str | None = field(
        default=None,
        metadata={
            "help": "Offline: the one logits-* config that teaches (default: every one, see --kd_teacher_weights)."
        },
    )
    kd_teacher_weights: str | None = field(
        default=None,
        metadata={
            "help": "Offline: which stored teachers teach and their weights, 'smollm2-135m-instruct=1,gemma3-270m=0.5' "
            "(default: every logits-* config, weight 1)."
        },
    )
    kd_cross_loss: str = field(
        default="uld",
        metadata={"help": f"Teachers with another tokenizer: one of {CROSS_LOSSES} (trainers/cross_tokenizer.py)."},
    )
    kd_teacher: str | None = field(
        default=None,
        metadata={"help": "Online KD: the teacher spec (default: the dataset's first teacher)."},
    )
    kd_top_k: int = field(default=0, metadata={"help": "Online KD: keep the teacher's top-k only (0 = vocabulary)."})
    kd_chunk_tokens: int = field(
        default=DEFAULT_CHUNK_TOKENS,
        metadata={
            "help": "Labelled positions per LM-head chunk of the KD loss: the peak holds a few chunk x vocabulary "
            "float32 tensors instead of the whole batch's (0 = one chunk; trainers/chunked_kd.py)."
        },
    )

    # --method gkd (trainers/gkd.py), named as TRL's GKDConfig names them; it also reads kd_teacher and temperature
    lmbda: float = field(default=0.5, metadata={"help": "gkd: share of batches that are the student's own samples."})
    beta: float = field(
        default=0.5, metadata={"help": "gkd: generalised JSD interpolation, 0 = forward KL, 1 = reverse KL."}
    )
    max_new_tokens: int = field(default=128, metadata={"help": "gkd: longest sample the student writes."})

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {self.alpha}")
        if self.kd_loss not in KD_LOSSES:
            raise ValueError(f"--kd_loss must be one of {KD_LOSSES}, got {self.kd_loss!r}")
        if self.kd_tail not in TAILS:
            raise ValueError(f"--kd_tail must be one of {TAILS}, got {self.kd_tail!r}")
        if self.kd_source not in KD_SOURCES:
            raise ValueError(f"--kd_source must be one of {KD_SOURCES}, got {self.kd_source!r}")
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be positive, got {self.temperature}")
        for name in ("lmbda", "beta"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.kd_chunk_tokens < 0:
            raise ValueError(f"--kd_chunk_tokens must be 0 (one chunk) or positive, got {self.kd_chunk_tokens}")
        if self.kd_cross_loss not in CROSS_LOSSES:
            raise ValueError(f"--kd_cross_loss must be one of {CROSS_LOSSES}, got {self.kd_cross_loss!r}")
        self.teacher_weights()

    def teacher_weights(self) -> dict[str, float]:
        """``--kd_teacher_weights`` as ``{teacher: weight}`` ({} = every stored teacher, weight 1)."""
        weights = {}
        for item in filter(None, (part.strip() for part in (self.kd_teacher_weights or "").split(","))):
            name, _, value = item.partition("=")
            try:
                weights[name.strip()] = float(value) if value else 1.0
            except ValueError:
                raise ValueError(f"--kd_teacher_weights: {item!r} is not teacher=weight") from None
            if weights[name.strip()] < 0:
                raise ValueError(f"--kd_teacher_weights: {item!r} has a negative weight")
        if weights and not sum(weights.values()):
            raise ValueError("--kd_teacher_weights: every weight is 0")
        return weights

    def objective(self) -> KDObjective:
        return KDObjective(self.alpha, self.kd_loss, self.temperature, self.kd_tail, self.bild_k)

    def describe(self, method: str = "kd") -> dict:
        """What the card records of a distillation run's options (``method`` kd or gkd)."""
        if method == "gkd":
            keys = ("lmbda", "beta", "temperature", "max_new_tokens")
            return {key: getattr(self, key) for key in keys}
        return {
            "alpha": self.alpha,
            "kd_loss": self.kd_loss,
            "temperature": self.temperature,
            "kd_tail": self.kd_tail,
            "kd_source": self.kd_source,
            **({"bild_k": self.bild_k} if self.kd_loss == "bild" else {}),
        }

    def online_teacher(self, dataset_teachers: list[str]) -> str:
        """The teacher an online run loads: ``--kd_teacher``, else the first (sorted) teacher of the dataset."""
        return self.kd_teacher or sorted(set(dataset_teachers))[0]


@dataclass
class CrossTeacher:
    """A stored teacher with another tokenizer: its weight in the KD term, its loss, and (hybrid) the map from its
    ids to the student's (``trainers.cross_tokenizer.vocabulary_map``)."""

    name: str
    weight: float
    loss: str
    twins: torch.Tensor | None = None


# -- data -------------------------------------------------------------------------------------------------


def with_labels(row: dict) -> dict:
    """Labels = the assistant span's tokens, -100 elsewhere (the NLL and KD positions are the same)."""
    start, end, ids = row["span_start"], row["span_end"], row["input_ids"]
    return {"labels": [-100] * start + list(ids[start:end]) + [-100] * (len(ids) - end)}


def mismatch_message(stored: dict, student: dict, where: str) -> str:
    return (
        f"{where} comes from tokenizer {stored['tokenizer']} (vocab {stored['vocab_size']}, hash "
        f"{stored['tokenizer_hash']}) but the student speaks {student['tokenizer']} (vocab {student['vocab_size']}, "
        f"hash {student['tokenizer_hash']}): logit distillation needs one vocabulary. Pick a student size in the "
        "teacher's family (python -m trainers.sizes), or rebuild the logits with a teacher that shares the "
        "student's tokenizer (make push-data LOGITS=k LOGITS_TEACHERS=...)."
    )


def offline_rows(
    location: str, student: dict, kd_args: DistillationArguments, teachers: str | None = None, tokenizer=None
) -> tuple[Dataset, dict, list[CrossTeacher]]:
    """The training rows with labels and every stored teacher's targets; what the card records; the teachers
    with another tokenizer than the student's (aligned by text, ``align_row``).

    The first stored config that shares the student's tokenizer gives the sequences (else the ``default`` rows,
    tokenized as the logits builder does). ``teachers`` (comma-separated) keeps only the rows whose rationale those
    teachers wrote, as for ``sft``.
    """
    names = [c for c in get_dataset_config_names(location) if c.startswith(LOGITS_PREFIX)]
    if kd_args.logits_config:
        if kd_args.logits_config not in names:
            raise LogitsError(f"{location} has no config {kd_args.logits_config!r}; it has {names or 'none'}")
        names = [kd_args.logits_config]
    if not names:
        raise LogitsError(
            f"{location} has no stored teacher logits: run `make push-data LOGITS=16` to add them, "
            "or train with KD_SOURCE=online"
        )
    configs = {name: load_dataset(location, name, split="train") for name in names}
    by_teacher = {rows[0]["logits_teacher"]: name for name, rows in configs.items()}
    weights = kd_args.teacher_weights()
    if unknown := sorted(set(weights) - set(by_teacher)):
        raise LogitsError(f"--kd_teacher_weights names {unknown}; {location} stores logits of {sorted(by_teacher)}")
    weights = {t: weights.get(t, 0.0 if weights else 1.0) for t in by_teacher}
    chosen = [name for teacher, name in by_teacher.items() if weights[teacher] > 0]
    same = [n for n in chosen if configs[n][0]["tokenizer_hash"] == student["tokenizer_hash"]][:1]
    cross = [n for n in chosen if n not in same]
    for name in cross:
        if configs[name][0].get("token_chars") is None or tokenizer is None:  # written before logits v3
            stored = {key: configs[name][0][key] for key in ("tokenizer", "tokenizer_hash", "vocab_size")}
            raise LogitsError(
                mismatch_message(stored, student, f"config {name!r} of {location}")
                + " Or rebuild the logits (make push-data LOGITS=k): configs written since logits v3 store the "
                "character spans that align another tokenizer's tokens with the student's."
            )

    wanted = {t.strip() for t in (teachers or "").split(",") if t.strip()}

    def keep_writers(rows: Dataset) -> Dataset:
        if not wanted:
            return rows
        rows = rows.filter(lambda row: row["teacher"] in wanted)
        if len(rows) == 0:
            raise LogitsError(f"no training rows have a rationale by {sorted(wanted)}")
        return rows

    total = sum(weights.values())
    if same:
        rows = keep_writers(configs[same[0]]).map(with_labels)
        first = rows[0]
        info = {"logits_config": same[0], "logits_teacher": first["logits_teacher"], "k": first["k"]}
        info |= {key: first[key] for key in ("tokenizer", "tokenizer_hash", "vocab_size")}
        info["teacher_weight"] = round(weights[first["logits_teacher"]] / total, 4)
    else:
        rows = tokenized_rows(keep_writers(load_dataset(location, split="train")), tokenizer)
        info = {"logits_config": None, "logits_teacher": None, "teacher_weight": 0.0}
    keep = ["input_ids", "labels", *TEACHER_COLUMNS]
    crossing, described = [], []
    if cross:  # where each of the student's tokens ends in the rationale: once per row, whatever the teachers
        rows = rows.map(
            lambda row: {"student_ends": char_ends(tokenizer, row["input_ids"][row["span_start"] : row["span_end"]])}
        )
    for i, name in enumerate(cross):
        stored = configs[name]
        teacher = stored[0]["logits_teacher"]
        columns = ["id", "teacher", *(c for c in ALIGN_COLUMNS if c in stored.column_names)]
        index = {(r["id"], r["teacher"]): r for r in stored.select_columns(columns)}
        rows = rows.map(lambda row, i=i, index=index, name=name: align_row(row, index, i, name))
        keep += [f"{CROSS_PREFIX}{i}_{f}" for f in CROSS_FIELDS]
        twins = None
        if kd_args.kd_cross_loss == "hybrid":
            twins = vocabulary_map(teacher_tokenizer(stored[0]), tokenizer)
        crossing.append(CrossTeacher(teacher, weights[teacher] / total, kd_args.kd_cross_loss, twins))
        first = stored[0]
        described.append(
            {
                "teacher": teacher,
                "config": name,
                "k": first["k"],
                "tokenizer": first["tokenizer"],
                "vocab_size": first["vocab_size"],
                "weight": round(weights[teacher] / total, 4),
                "loss": kd_args.kd_cross_loss,
            }
        )
    if described:
        info["cross_teachers"] = described
    rows = rows.remove_columns([c for c in rows.column_names if c not in keep])
    return rows, info, crossing


def teacher_tokenizer(stored: dict):
    """The tokenizer a logits config was scored with, to map its ids to the student's (hybrid KD)."""
    from transformers import AutoTokenizer

    source = stored.get("tokenizer_source") or stored["tokenizer"]
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise LogitsError(
            f"--kd_cross_loss hybrid needs the tokenizer of {stored['logits_teacher']!r} ({source}), which did not "
            f"load ({error}); use --kd_cross_loss uld, which needs no vocabulary map"
        ) from error


# what align_row reads of a stored row: its top-k (either layout) and what aligns it with the student's tokens
ALIGN_COLUMNS = (*(c for c in TEACHER_COLUMNS if c != "span_start"), "token_logprob", "token_chars")


def align_row(row: dict, index: dict, i: int, config: str) -> dict:
    """Teacher ``i``'s targets for one training row: per group of text-aligned tokens
    (``trainers.cross_tokenizer.align`` of the row's ``student_ends`` and the teacher's stored token lengths), the
    student's first token and group length, the teacher's top-k at its first token and the log-prob of the rest of
    its tokens."""
    key = (row["id"], row["teacher"])
    if key not in index:
        raise LogitsError(f"config {config!r} has no row for {key}: rebuild the logits (make push-data LOGITS=k)")
    stored = {name: value for name, value in index[key].items() if value is not None}
    groups = align(row["student_ends"], np.cumsum(stored["token_chars"]).tolist())
    k = stored["k"]
    ids = np.asarray(stored["topk_ids"], dtype=np.int64).reshape(-1, k)
    values = teacher_logprobs(stored)
    written = np.asarray(stored["token_logprob"], dtype=np.float32)
    starts = [g.t_start for g in groups]
    prefix = f"{CROSS_PREFIX}{i}_"
    return {
        prefix + "first": [g.s_start for g in groups],
        prefix + "length": [g.s_end - g.s_start for g in groups],
        prefix + "ids": ids[starts].reshape(-1).tolist(),
        prefix + "logprobs": values[starts].reshape(-1).tolist(),
        prefix + "rest": [float(written[g.t_start + 1 : g.t_end].sum()) for g in groups],
    }


def tokenized_rows(rationale_rows: Dataset, tokenizer) -> Dataset:
    """The ``default`` rows tokenized exactly as the logits builder does, with the assistant span and labels."""

    def tokenize(row: dict) -> dict:
        encoded = tokenize_conversation(tokenizer, row["messages"])
        return {**encoded, **with_labels(encoded)}

    return rationale_rows.map(tokenize)


def online_rows(rationale_rows: Dataset, tokenizer) -> Dataset:
    """What online KD trains on: the tokenized ``default`` rows' ids and labels."""
    return tokenized_rows(rationale_rows, tokenizer).select_columns(["input_ids", "labels"])


class DistillationCollator:
    """TRL's collator for ids and labels, plus the stored top-k as ``[B, L, k]`` tensors aligned with ``labels``.

    Position ``t`` holds the teacher's distribution over token ``t`` (predicted from ``t - 1``), so after the usual
    shift it lines up with the labels. Positions without a label keep zeros and are never read.
    """

    def __init__(self, base):
        self.base = base

    def __call__(self, examples: list[dict]) -> dict:
        teacher = [{name: example.pop(name) for name in TEACHER_COLUMNS if name in example} for example in examples]
        crossing = sorted({name.split("_")[0] for name in examples[0] if name.startswith(CROSS_PREFIX)})
        cross = [[{f: example.pop(f"{c}_{f}") for f in CROSS_FIELDS} for example in examples] for c in crossing]
        batch = self.base(examples)
        if cross:
            batch["cross_targets"] = [cross_batch(parts, batch["labels"]) for parts in cross]
        if "topk_ids" not in teacher[0]:
            return batch
        rows, length = batch["input_ids"].shape
        k = max(t["k"] for t in teacher)
        ids = torch.zeros(rows, length, k, dtype=torch.long)
        logprobs = torch.zeros(rows, length, k, dtype=torch.float32)
        for row, t in enumerate(teacher):
            top = np.asarray(t["topk_ids"], dtype=np.int64).reshape(-1, t["k"])
            values = teacher_logprobs(t)
            start = t["span_start"]
            end = min(start + len(top), length)  # a sequence TRL truncated at max_length loses its tail
            ids[row, start:end, : t["k"]] = torch.from_numpy(top[: end - start])
            logprobs[row, start:end, : t["k"]] = torch.from_numpy(values[: end - start])
        batch["teacher_ids"], batch["teacher_logprobs"] = ids, logprobs
        return batch


def cross_batch(parts: list[dict], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """One cross-tokenizer teacher's groups in a batch, indexed into the N labelled positions (row-major, as
    ``labelled_hidden_states`` orders them); groups cut by truncation are dropped."""
    counts = (labels[:, 1:] != -100).sum(1).tolist()
    offsets = np.cumsum([0, *counts[:-1]])
    first, rest_index, rest_group, ids, values, rest = [], [], [], [], [], []
    for row, part in enumerate(parts):
        groups = len(part["first"])
        k = len(part["ids"]) // max(groups, 1)
        for g, (start, length) in enumerate(zip(part["first"], part["length"], strict=True)):
            if start + length > counts[row]:
                break
            rest_index += range(offsets[row] + start + 1, offsets[row] + start + length)
            rest_group += [len(first)] * (length - 1)
            first.append(offsets[row] + start)
            ids.append(part["ids"][g * k : (g + 1) * k])
            values.append(part["logprobs"][g * k : (g + 1) * k])
            rest.append(part["rest"][g])
    return {
        "first": torch.tensor(first, dtype=torch.long),
        "rest_index": torch.tensor(rest_index, dtype=torch.long),
        "rest_group": torch.tensor(rest_group, dtype=torch.long),
        "teacher_ids": torch.tensor(ids, dtype=torch.long).reshape(len(first), -1),
        "teacher_logprobs": torch.tensor(values, dtype=torch.float32).reshape(len(first), -1),
        "teacher_rest": torch.tensor(rest, dtype=torch.float32),
    }


# -- trainer ----------------------------------------------------------------------------------------------


class KDTrainer(StudentSFTTrainer):
    """``SFTTrainer`` whose loss is ``alpha * KD + (1 - alpha) * NLL`` over the assistant tokens.

    The loss runs inside the model's own forward (``distillation=``), so DDP and PEFT wrappers are honoured,
    and projects only the labelled positions through the LM head, a chunk at a time (``trainers.chunked_kd``).
    Normalisation follows TRL: sums over tokens divided by the number of labelled tokens in the whole
    (accumulated, all-rank) batch.
    """

    def __init__(
        self,
        *args,
        kd_args: DistillationArguments,
        teacher_model=None,
        cross_teachers: list[CrossTeacher] = (),
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.kd_args = kd_args
        self.teacher_model = teacher_model
        self.cross_teachers = list(cross_teachers)
        self.same_weight = 1.0 - sum(c.weight for c in self.cross_teachers)
        self.data_collator = DistillationCollator(self.data_collator)
        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        if not compact_head_supported(model):
            raise LogitsError(f"{type(model).__name__} scales or caps its logits; KD here needs a plain linear LM head")
        if teacher_model is not None:
            teacher_model.to(self.accelerator.device).eval().requires_grad_(False)
        for key in ("kd_loss", "nll", *(["cross_kd"] if self.cross_teachers else [])):
            self._metrics["train"][key], self._metrics["eval"][key] = [], []

    @torch.no_grad()
    def online_teacher(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The online teacher's top-k ``[N, k]`` at the batch's labelled positions, scored chunk by chunk."""
        kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs.get("attention_mask")}
        hidden, _, _ = labelled_hidden_states(self.teacher_model, kwargs, inputs["labels"])
        head = self.teacher_model.get_output_embeddings()
        return online_top_k(hidden, head, self.kd_args.kd_top_k, self.kd_args.kd_chunk_tokens)

    def token_weights(
        self, inputs: dict, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor
    ) -> torch.Tensor | None:
        """Per-token weights ``[N]`` of both loss terms at the N labelled positions, or None (uniform, the default).

        ``inputs`` holds ``input_ids``, ``attention_mask`` and ``labels``; the teacher's top-k are already at the
        labelled positions. ``trainers.ensemble`` overrides it to boost the tokens its ensemble gets wrong.
        """
        return None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        teacher_ids = inputs.pop("teacher_ids", None)
        teacher_logprobs = inputs.pop("teacher_logprobs", None)
        cross = [
            CrossTargets(
                **parts, loss=c.loss, weight=c.weight, twins=None if c.twins is None else c.twins.to(model.device)
            )
            for parts, c in zip(inputs.pop("cross_targets", []), self.cross_teachers, strict=True)
        ]
        mask = inputs["labels"][:, 1:] != -100  # the positions the student's forward scores (labelled_hidden_states)
        if self.teacher_model is not None:
            teacher_ids, teacher_logprobs = self.online_teacher(inputs)
        elif teacher_ids is not None:
            teacher_ids, teacher_logprobs = teacher_ids[:, 1:][mask], teacher_logprobs[:, 1:][mask]
        elif cross:  # only teachers with other tokenizers: the same-tokenizer term is empty
            teacher_ids = torch.zeros(int(mask.sum()), 0, dtype=torch.long, device=mask.device)
            teacher_logprobs = torch.zeros(int(mask.sum()), 0, device=mask.device)
        else:
            raise LogitsError("KD batch without teacher logits: train on a logits-* config or with KD_SOURCE=online")
        targets = DistillationTargets(
            teacher_ids=teacher_ids,
            teacher_logprobs=teacher_logprobs,
            objective=replace(self.kd_args.objective(), kd_weight=self.same_weight),
            token_weights=self.token_weights(inputs, teacher_ids, teacher_logprobs),
            chunk_tokens=self.kd_args.kd_chunk_tokens,
            cross=cross,
        )
        # weighted or not, the logged kd_loss / nll are the unweighted sums
        out = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
            labels=inputs["labels"],
            distillation=targets,
        )
        count = torch.as_tensor(mask.sum() if num_items_in_batch is None else num_items_in_batch).clamp(min=1)
        loss = out.objective / count
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())

        with torch.no_grad():
            tokens = self.accelerator.gather_for_metrics(mask.sum()).sum().clamp(min=1)
            gathered = {"kd_loss": out.kd, "nll": out.nll, "mean_token_accuracy": out.correct, "entropy": out.entropy}
            if cross:
                gathered["cross_kd"] = out.cross
            for key, value in gathered.items():
                self._metrics[mode][key].append((self.accelerator.gather_for_metrics(value).sum() / tokens).item())
        if mode == "train":
            self._total_train_tokens += self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, out) if return_outputs else loss


def load_online_teacher(spec: str, student: dict):
    """The teacher model for online KD, after checking it speaks the student's tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from datasets_builders.teachers import resolve_model_source

    name, source = resolve_model_source(spec)
    identity = tokenizer_identity(AutoTokenizer.from_pretrained(source), name)
    if identity["tokenizer_hash"] != student["tokenizer_hash"]:
        raise LogitsError(mismatch_message(identity, student, f"online teacher {name!r}"))
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    if not compact_head_supported(model):
        raise LogitsError(f"online teacher {name!r} scales or caps its logits; use stored logits instead")
    return model, {"logits_teacher": name, "k": "vocabulary", **identity}
