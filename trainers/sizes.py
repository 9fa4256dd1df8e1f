"""Named student sizes (``SIZE=…``): each is an architecture plus an initialisation.

    python -m trainers.sizes          # prints the table: name, initialisation, total / non-embedding params

Three initialisations:

* ``scratch`` — a Llama in the SmolLM2 family (its tokenizer, vocabulary 49152, tied embeddings), random
  weights. Names are the NON-embedding parameter count: at these widths the ``vocab x hidden`` embedding is most
  of the total, so the ladder is named by the part that grows with depth and width.

Parameters are counted one way for the whole project, ``count_parameters`` (tied heads once, embeddings apart), from
a model built on the meta device here and from safetensors headers in ``eval/models.py``.
* ``pretrained`` — a released checkpoint: ``135M`` is SmolLM2-135M-Instruct from its packaged GGUF (works
  offline); the larger ones are Hub ids for machines with a GPU and a network.
* ``pruned`` — the teacher with its embeddings and an evenly spaced subset of its layers, weights copied.
* ``minitron`` — the teacher pruned in depth and width by importance on calibration text from the task's train
  split (``trainers/minitron.py``); named by the total parameters it keeps (``135M-minitron-60M``).

``<scratch size>-pt`` (``8M-pt``) is a scratch size pre-trained by ``make pretrain SIZE=8M`` (trainers/pretrain.py):
a ``pretrained`` size whose checkpoint is the ``pretrain-8M`` model repo on the Hub target.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from scalingdown.errors import UserError
from scalingdown.hub import PRETRAINED_HERE
from trainers.minitron import MinitronShape, minitron_prune

SMOLLM2_TOKENIZER = "smollm2-135m-instruct"  # packaged teacher: tokenizer + chat template, offline
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_VOCAB = 49152
QWEN2_5_VOCAB = 151936


class SizeError(UserError, ValueError):
    """An unknown size name; the message lists the valid ones."""


def resolve_source(spec: str) -> str:
    """A folder or Hub id ``from_pretrained`` takes for a packaged teacher name, folder or Hub id."""
    from datasets_builders.teachers import resolve_model_source

    return resolve_model_source(spec)[1]


EMBEDDING_NAMES = ("embed_tokens.weight", "lm_head.weight", "wte.weight")


def count_parameters(named_numels: Iterable[tuple[str, int]]) -> dict[str, int]:
    """``{"total", "non_embedding"}`` of ``(tensor name, element count)`` pairs: the one parameter count of the project.

    Every source lists a tied output head once (``named_parameters`` and safetensors files both do), so it counts
    once; an untied ``lm_head`` counts as embedding, the scaling-law convention the size ladder is named by.
    """
    total = embedding = 0
    for name, numel in named_numels:
        total += numel
        if name.endswith(EMBEDDING_NAMES):
            embedding += numel
    return {"total": total, "non_embedding": total - embedding}


def model_parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """``count_parameters`` of a built model (a meta-device one works: no weights are needed)."""
    return count_parameters((name, p.numel()) for name, p in model.named_parameters())


@dataclass(frozen=True)
class StudentSize:
    """One ``SIZE=…``: how to build the student and which tokenizer it speaks."""

    name: str
    init: Literal["scratch", "pretrained", "pruned", "minitron"]
    description: str
    source: str = SMOLLM2_TOKENIZER  # pretrained/pruned: packaged name, folder or Hub id; scratch: tokenizer
    hub_id: str | None = None  # upstream checkpoint for the card's base_model
    architecture: dict = field(default_factory=dict)  # scratch: LlamaConfig fields
    keep_layers: int | None = None  # pruned: how many evenly spaced layers survive
    minitron: MinitronShape | None = None  # minitron: the shape importance pruning cuts the source to
    # Hub checkpoints never downloaded here: the fields of their config.json that fix the shapes (with model_type)
    hub_config: dict | None = None

    def tokenizer_source(self) -> str:
        """Where the tokenizer (and chat template) comes from: the teacher family's, or the checkpoint's own."""
        return resolve_source(self.source)

    @property
    def base_model(self) -> str | None:
        """The Hub id a card names as ``base_model`` (None when trained from scratch)."""
        return None if self.init == "scratch" else (self.hub_id or self.source)

    def shape(self) -> str | None:
        """What fixes the student's architecture beyond its source (None: the source's own)."""
        if self.init == "scratch":
            return json.dumps(self.architecture, sort_keys=True)
        if self.init == "pruned":
            return f"keep_layers={self.keep_layers}"
        if self.init == "minitron":
            return repr(self.minitron)
        return None

    def build_config(self):
        """The student's config, without building weights (cheap; reads at most a config.json)."""
        from transformers import AutoConfig

        if self.init == "scratch":
            return scratch_config(**self.architecture)
        if self.hub_config:
            fields = dict(self.hub_config)
            return AutoConfig.for_model(fields.pop("model_type"), **fields)
        config = AutoConfig.from_pretrained(resolve_source(self.source))
        if self.init == "minitron":
            return self.minitron.apply(config)
        if self.init == "pruned":
            config.num_hidden_layers = self.keep_layers
            if getattr(config, "layer_types", None):
                config.layer_types = config.layer_types[: self.keep_layers]
        return config

    def parameter_counts(self) -> dict[str, int]:
        """``{"total", "non_embedding"}`` of the model its config builds on the meta device (no weights needed)."""
        from transformers import AutoModelForCausalLM

        config = self.build_config()  # outside the meta context: a cold cache converts the GGUF teacher here
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return model_parameter_counts(model)

    def build_model(self, dtype: torch.dtype = torch.float32, seed: int = 0, calibration: list[str] | None = None):
        """The initialised student model; a ``minitron`` size ranks what it keeps on ``calibration`` texts."""
        from transformers import AutoModelForCausalLM

        if self.init == "minitron":
            if not calibration:
                raise SizeError(
                    f"size {self.name} is pruned by importance on the task's train rows: train it with "
                    "`make train`, which passes them"
                )
            return minitron_prune(resolve_source(self.source), self.minitron, calibration, dtype=dtype)

        if self.init == "scratch":
            torch.manual_seed(seed)
            return AutoModelForCausalLM.from_config(self.build_config(), dtype=dtype)
        if self.init == "pretrained":
            return AutoModelForCausalLM.from_pretrained(resolve_source(self.source), dtype=dtype)
        return prune_layers(resolve_source(self.source), self.keep_layers, dtype=dtype)


def scratch_config(
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
    vocab_size: int = SMOLLM2_VOCAB,
    max_position_embeddings: int = 2048,
):
    """A SmolLM2-family Llama config (tied embeddings, SmolLM2's special token ids)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,  # <|im_start|>, as in SmolLM2-Instruct
        eos_token_id=2,  # <|im_end|>
        pad_token_id=2,
    )


def save_tiny_llama(tokenizer_source: str, folder: str | Path) -> Path:
    """A tiny random Llama (hidden 32, 2 layers) with ``tokenizer_source``'s tokenizer, saved to ``folder``: real
    generation in milliseconds, for smoke runs and tests. Its weights are wide (init range 0.2): at the default
    0.02 greedy decoding of a random model emits only newlines."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        initializer_range=0.2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def evenly_spaced_layers(total: int, keep: int) -> list[int]:
    """Indices of ``keep`` layers spread over ``total``, always keeping the first and the last."""
    if not 1 <= keep <= total:
        raise SizeError(f"cannot keep {keep} of {total} layers")
    if keep == 1:
        return [0]
    return [round(j * (total - 1) / (keep - 1)) for j in range(keep)]


def prune_layers(source: str, keep: int, dtype: torch.dtype = torch.float32):
    """The model at ``source`` with only ``keep`` evenly spaced decoder layers; every kept weight is copied."""
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    kept = evenly_spaced_layers(teacher.config.num_hidden_layers, keep)
    config = teacher.config
    config.num_hidden_layers = keep
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in kept]
    student = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = teacher.state_dict()
    renamed = {}
    for key, value in state.items():
        if ".layers." in key:
            prefix, rest = key.split(".layers.", 1)
            index, tail = rest.split(".", 1)
            if int(index) not in kept:
                continue
            key = f"{prefix}.layers.{kept.index(int(index))}.{tail}"
        renamed[key] = value
    missing, unexpected = student.load_state_dict(renamed, strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise SizeError(f"pruning {source} left missing={missing[:3]} unexpected={unexpected[:3]}")
    student.tie_weights()
    student.config.pruned_from = {"source": str(source), "kept_layers": kept}
    return student


def _scratch(name: str, h: int, layers: int, heads: int, kv_heads: int, i: int) -> StudentSize:
    arch = dict(
        hidden_size=h,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=i,
    )
    return StudentSize(
        name, "scratch", f"Llama h={h} L={layers} heads={heads}/{kv_heads} mlp={i}, random init", architecture=arch
    )


def _hub_config(model_type: str, h: int, layers: int, heads: int, kv_heads: int, i: int, vocab: int) -> dict:
    """The shape-fixing fields of a released checkpoint's config.json (all of these tie their embeddings)."""
    return dict(
        model_type=model_type,
        hidden_size=h,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=i,
        vocab_size=vocab,
        tie_word_embeddings=True,
    )


SIZES: dict[str, StudentSize] = {
    s.name: s
    for s in [
        # from scratch in the teacher family; non-embedding counts: 0.98M 3.15M 7.87M 15.7M 31.5M 60.2M
        _scratch("1M", 128, 5, 4, 2, 384),
        _scratch("3M", 192, 8, 6, 2, 512),
        _scratch("8M", 256, 10, 8, 4, 768),
        _scratch("16M", 384, 10, 6, 2, 1024),
        _scratch("33M", 512, 10, 8, 4, 1536),
        _scratch("60M", 576, 17, 9, 3, 1536),
        # pretrained checkpoints
        StudentSize(
            "135M",
            "pretrained",
            "SmolLM2-135M-Instruct (the teacher itself, from its packaged GGUF)",
            source="smollm2-135m-instruct",
            hub_id=SMOLLM2_HUB_ID,
        ),
        StudentSize(
            "360M",
            "pretrained",
            "SmolLM2-360M-Instruct (Hub; GPU)",
            source="HuggingFaceTB/SmolLM2-360M-Instruct",
            hub_config=_hub_config("llama", 960, 32, 15, 5, 2560, SMOLLM2_VOCAB),
        ),
        StudentSize(
            "1.7B",
            "pretrained",
            "SmolLM2-1.7B-Instruct (Hub; GPU)",
            source="HuggingFaceTB/SmolLM2-1.7B-Instruct",
            hub_config=_hub_config("llama", 2048, 24, 32, 32, 8192, SMOLLM2_VOCAB),
        ),
        StudentSize(
            "qwen2.5-0.5b",
            "pretrained",
            "Qwen2.5-0.5B-Instruct (Hub; GPU; own tokenizer)",
            source="Qwen/Qwen2.5-0.5B-Instruct",
            hub_config=_hub_config("qwen2", 896, 24, 14, 2, 4864, QWEN2_5_VOCAB),
        ),
        StudentSize(
            "qwen2.5-1.5b",
            "pretrained",
            "Qwen2.5-1.5B-Instruct (Hub; GPU; own tokenizer)",
            source="Qwen/Qwen2.5-1.5B-Instruct",
            hub_config=_hub_config("qwen2", 1536, 28, 12, 2, 8960, QWEN2_5_VOCAB),
        ),
        # pruned from the teacher: evenly spaced layers kept; 18L and 9L have the parameters of Minitron 90M and 60M
        *[
            StudentSize(
                f"135M-prune-{layers}L",
                "pruned",
                f"SmolLM2-135M-Instruct, {layers} of 30 layers kept (evenly spaced)",
                source="smollm2-135m-instruct",
                hub_id=SMOLLM2_HUB_ID,
                keep_layers=layers,
            )
            for layers in (27, 24, 18, 15, 9, 8, 4)
        ],
        *[
            StudentSize(
                f"135M-minitron-{target}",
                "minitron",
                f"SmolLM2-135M-Instruct pruned by importance to hidden {shape.hidden_size}, {shape.num_layers} layers, "
                f"{shape.kv_groups} KV groups, MLP {shape.intermediate_size}",
                source="smollm2-135m-instruct",
                hub_id=SMOLLM2_HUB_ID,
                minitron=shape,
            )
            for target, shape in [
                ("90M", MinitronShape(hidden_size=576, num_layers=24, kv_groups=3, intermediate_size=1024)),
                ("60M", MinitronShape(hidden_size=432, num_layers=20, kv_groups=3, intermediate_size=960)),
                ("30M", MinitronShape(hidden_size=264, num_layers=16, kv_groups=2, intermediate_size=1024)),
            ]
        ],
    ]
}


def get_size(name: str) -> StudentSize:
    """The registered size ``name`` (or ``<scratch size>-pt``); a ValueError listing every valid name otherwise."""
    if name.endswith(PRETRAINED_HERE) and name.removesuffix(PRETRAINED_HERE) in SIZES:
        return pretrained_here(name.removesuffix(PRETRAINED_HERE))
    if name not in SIZES:
        scratch = [s.name for s in SIZES.values() if s.init == "scratch"]
        raise SizeError(
            f"unknown student size {name!r} (SIZE=, --size); valid sizes: {', '.join(SIZES)}; "
            f"or a scratch size pre-trained by `make pretrain`: {', '.join(n + PRETRAINED_HERE for n in scratch)}"
        )
    return SIZES[name]


def pretrained_here(scratch_name: str) -> StudentSize:
    """``<size>-pt``: scratch size ``<size>`` initialised from the model repo ``make pretrain SIZE=<size>`` pushed
    to the Hub target (``pretrain-<size>``), so ``make train SIZE=<size>-pt`` distils a student pre-trained here."""
    from scalingdown.hub import HubError, HubTarget, pretrain_repo_name

    scratch = SIZES[scratch_name]
    name = scratch_name + PRETRAINED_HERE
    if scratch.init != "scratch":
        raise SizeError(f"{name!r}: only scratch sizes are pre-trained here, and {scratch_name} is {scratch.init}")
    target = HubTarget.from_env()
    repo = pretrain_repo_name(scratch_name)
    try:
        exists = target.exists("model", repo)
    except HubError:  # HUB_TARGET=hf without a token: from_pretrained will say what is missing
        exists = True
    if not exists:
        raise SizeError(
            f"size {name!r} starts from the pre-trained model repo {target.repo_id(repo)}, which is not on the "
            f"{target.kind} Hub target ({target.location('model', repo)}): "
            f"run `make pretrain SIZE={scratch_name}` first"
        )
    return StudentSize(
        name,
        "pretrained",
        scratch.description.replace("random init", f"pre-trained here (make pretrain SIZE={scratch_name})"),
        source=target.location("model", repo),
        hub_id=target.repo_id(repo),
        architecture=dict(scratch.architecture),
    )


def format_params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def pretrained_here_sizes() -> list[StudentSize]:
    """The ``<size>-pt`` sizes whose pre-trained repo exists on the Hub target now."""
    found = []
    for scratch in (s for s in SIZES.values() if s.init == "scratch"):
        try:
            found.append(pretrained_here(scratch.name))
        except SizeError:
            continue
    return found


if __name__ == "__main__":
    print(f"{'size':<20}{'init':<12}{'total':>10}{'non-emb':>10}  description")
    for size in [*SIZES.values(), *pretrained_here_sizes()]:
        try:
            counts = size.parameter_counts()
            total, non_emb = format_params(counts["total"]), format_params(counts["non_embedding"])
        except Exception as error:  # a Hub-only size on an offline machine
            total, non_emb = "?", f"({type(error).__name__})"
        print(f"{size.name:<20}{size.init:<12}{total:>10}{non_emb:>10}  {size.description}")
    print("\n<scratch size>-pt (e.g. 8M-pt): that size pre-trained here; `make pretrain SIZE=8M` makes it")
