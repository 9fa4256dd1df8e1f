"""A causal LM that averages the next-token distributions of several member causal LMs sharing one tokenizer.

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("<ensemble repo>", trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained("<ensemble repo>")

``from_pretrained`` loads each member with ``AutoModelForCausalLM`` (from a subfolder of the ensemble repo, or from
another repo pinned to a commit), passing ``dtype``/``device_map``/... through, and refuses members whose tokenizer
differs from the ensemble's. ``forward`` runs every member on the same inputs and combines their logits with the
config's weights and ``combine`` mode (see ``EnsembleConfig``). ``generate`` works with per-member KV caches
(``EnsembleCache``), so decoding costs what the members cost on their own, plus the combination.

Copied into every ensemble repo next to ``configuration_ensemble.py``: it imports only torch and transformers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_ensemble import EnsembleConfig

# from_pretrained options that say where files are, not how to build a model
HUB_OPTIONS = ("cache_dir", "force_download", "local_files_only", "proxies", "token")
AUTO_OPTIONS = ("trust_remote_code", "_from_auto", "_from_pipeline", "_commit_hash", "code_revision", "adapter_kwargs")
REMOTE_CODE_FILES = ("configuration_ensemble.py", "modeling_ensemble.py")
# transformers 5.24 renamed the KV cache argument and output field ``past_key_values`` to ``cache``; this file runs
# on whichever version loads it (a Space, a user's machine), so it speaks the one its transformers speaks.
CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def vocabulary_hash(tokenizer) -> str:
    """Identity of a tokenizer's token -> id map: equal hashes mean the members' logits index the same tokens.

    The same digest as ``datasets_builders.logits.tokenizer_identity`` (a test pins them together); repeated here
    because this file must load without the ScalingDown code.
    """
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def add_member(combined: torch.Tensor | None, logits: torch.Tensor, weight: float, combine: str) -> torch.Tensor:
    """Fold one member's logits (weight already normalised) into the running combination, in float32.

    ``"logits"``: ``sum_i w_i * logits_i``. ``"logprobs"``: ``log sum_i w_i * softmax(logits_i)``, accumulated with
    ``logaddexp`` so only one extra ``[..., vocab]`` tensor is alive at a time.
    """
    logits = logits.float()
    if combined is not None:
        logits = logits.to(combined.device)
    if combine == "logits":
        term = weight * logits
        return term if combined is None else combined + term
    term = logits.log_softmax(-1) + (math.log(weight) if weight > 0 else -math.inf)
    return term if combined is None else torch.logaddexp(combined, term)


class EnsembleCache:
    """One KV cache per member; ``generate`` stores it between steps and hands it back to ``forward``."""

    is_compileable = False

    def __init__(self, caches: list):
        self.caches = list(caches)

    @property
    def is_croppable(self) -> bool:
        return all(getattr(cache, "is_croppable", True) for cache in self.caches if cache is not None)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        first = self.caches[0] if self.caches else None
        return 0 if first is None else first.get_seq_length(layer_idx)

    def _each(self, method: str, *args) -> None:
        for cache in self.caches:
            if cache is not None:
                getattr(cache, method)(*args)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._each("reorder_cache", beam_idx)

    def crop(self, max_length: int) -> None:
        self._each("crop", max_length)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._each("batch_repeat_interleave", repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._each("batch_select_indices", indices)


class EnsembleForCausalLM(PreTrainedModel, GenerationMixin):
    """Members' next-token distributions combined: ``combine="logits"`` returns ``sum_i w_i * logits_i``;
    ``combine="logprobs"`` returns ``log(sum_i w_i * softmax(logits_i))`` (normalised log-probs)."""

    config_class = EnsembleConfig
    base_model_prefix = "members"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def __init__(self, config: EnsembleConfig, members: list[PreTrainedModel] | None = None):
        super().__init__(config)
        if members is None:
            raise ValueError(
                "an ensemble is built from trained members: load it with from_pretrained(<ensemble repo>) "
                "or build it as EnsembleForCausalLM(config, members=[...])"
            )
        if len(members) != len(config.members):
            raise ValueError(f"{len(members)} models for the {len(config.members)} members the config names")
        self.members = nn.ModuleList(members)
        self.tokenizer = None  # the shared tokenizer, when loaded by from_pretrained (save_pretrained writes it)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # each member keeps its own cache: ``forward`` builds an ``EnsembleCache``

    # -- loading ----------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        """Load the config, every member (with ``kwargs`` such as ``dtype`` or ``device_map``) and the tokenizer
        check; raise ``ValueError`` naming the member whose tokenizer is not the ensemble's."""
        if model_args:
            raise ValueError("EnsembleForCausalLM.from_pretrained takes keyword arguments only")
        path = str(pretrained_model_name_or_path)
        for name in AUTO_OPTIONS:
            kwargs.pop(name, None)
        hub = {name: kwargs.pop(name) for name in HUB_OPTIONS if name in kwargs}
        revision = kwargs.pop("revision", None)
        prefix = kwargs.pop("subfolder", "") or ""
        here = {**hub, "revision": revision, "subfolder": prefix}
        if not isinstance(config, EnsembleConfig):
            config = EnsembleConfig.from_pretrained(path, **here)
        if not config.members:
            raise ValueError(f"{path}: the ensemble config lists no members")

        # this repo's own code is what is running, so reading its config again is no new trust
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True, **here)
        expected = vocabulary_hash(tokenizer)
        if config.tokenizer_hash and config.tokenizer_hash != expected:
            raise ValueError(
                f"{path}: the tokenizer in the repo (vocabulary hash {expected}) is not the one the ensemble was "
                f"built with ({config.tokenizer_hash})"
            )
        members = []
        for index, spec in enumerate(config.members):
            source, where = member_location(path, spec, hub, revision, prefix)
            label = spec.get("name") or spec.get("subfolder") or spec.get("repo") or f"member {index}"
            try:
                member_tokenizer = AutoTokenizer.from_pretrained(source, **where)
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"ensemble member {label!r} ({source}) has no loadable tokenizer, so it cannot be checked "
                    f"against the ensemble's: {error}"
                ) from error
            found = vocabulary_hash(member_tokenizer)
            if found != expected:
                raise ValueError(
                    f"ensemble member {label!r} ({source}) speaks another tokenizer (vocab {len(member_tokenizer)}, "
                    f"hash {found}) than the ensemble (vocab {len(tokenizer)}, hash {expected}): averaging logits "
                    "needs every member to index the same tokens"
                )
            members.append(AutoModelForCausalLM.from_pretrained(source, **where, **kwargs))
        widths = {m.get_output_embeddings().weight.shape[0] for m in members if m.get_output_embeddings() is not None}
        if len(widths) > 1:
            raise ValueError(f"{path}: the members' output layers have different widths {sorted(widths)}")

        model = cls(config, members)
        model.tokenizer = tokenizer
        model.config._name_or_path = path
        try:
            model.generation_config = GenerationConfig.from_pretrained(path, **here)
        except OSError:
            model.generation_config = GenerationConfig.from_model_config(config)
        return model.eval()

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """The layout ``from_pretrained`` reads: config, code, tokenizer, and each member in its subfolder (members
        loaded from other repos are copied in, keeping their repo and revision as provenance)."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        specs = []
        for index, (member, spec) in enumerate(zip(self.members, self.config.members, strict=True)):
            subfolder = spec.get("subfolder") or f"member-{index + 1}"
            member.save_pretrained(folder / subfolder, **kwargs)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(folder / subfolder)
            specs.append({**spec, "subfolder": subfolder})
        config = EnsembleConfig.from_dict({**self.config.to_dict(), "members": specs})
        config.save_pretrained(folder)
        self.generation_config.save_pretrained(folder)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)
        for name in REMOTE_CODE_FILES:
            target = folder / name
            if Path(__file__).with_name(name).resolve() != target.resolve():
                shutil.copyfile(Path(__file__).with_name(name), target)

    # -- the model --------------------------------------------------------------------------------------------

    def get_input_embeddings(self):
        return None  # each member embeds the ids itself

    def get_output_embeddings(self):
        return None  # no single LM head: the logits are a combination

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: EnsembleCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        if inputs_embeds is not None:
            raise ValueError("the members embed tokens with their own embeddings: pass input_ids, not inputs_embeds")
        past_key_values = kwargs.pop("cache", None) if past_key_values is None else past_key_values
        if past_key_values is not None and not isinstance(past_key_values, EnsembleCache):
            raise ValueError(f"an ensemble takes the EnsembleCache it returned, not {type(past_key_values).__name__}")
        for name in ("output_attentions", "output_hidden_states", "num_items_in_batch", "return_dict", "cache"):
            kwargs.pop(name, None)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        caches = past_key_values.caches if past_key_values is not None else [None] * len(self.members)
        weights = self.config.normalised_weights()
        combined, new_caches = None, []
        for member, weight, cache in zip(self.members, weights, caches, strict=True):
            out = member(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=use_cache,
                logits_to_keep=logits_to_keep,
                return_dict=True,
                **{CACHE_NAME: cache},
                **kwargs,
            )
            new_caches.append(getattr(out, CACHE_NAME) if use_cache else None)
            combined = add_member(combined, out.logits, weight, self.config.combine)
        loss = None
        if labels is not None:
            shifted = labels[:, 1:].to(combined.device)
            loss = F.cross_entropy(combined[:, :-1].flatten(0, 1), shifted.flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(
            loss=loss, logits=combined, **{CACHE_NAME: EnsembleCache(new_caches) if use_cache else None}
        )


def member_location(path: str, spec: dict, hub: dict, revision: str | None, prefix: str) -> tuple[str, dict]:
    """``(source, from_pretrained kwargs)`` of one member: a subfolder of the ensemble repo at the ensemble's own
    revision, or another repo at the commit the config pins (checked for a local git folder, where
    ``from_pretrained`` itself ignores ``revision``)."""
    if spec.get("subfolder"):
        subfolder = "/".join(p for p in (prefix, spec["subfolder"]) if p)
        return path, {**hub, "revision": revision, "subfolder": subfolder}
    repo, pinned = spec["repo"], spec.get("revision")
    if pinned and os.path.isdir(os.path.join(repo, ".git")):
        head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        if not head or not (head.startswith(pinned) or pinned.startswith(head)):
            raise ValueError(f"ensemble member {repo} is pinned to commit {pinned}, but that folder is at {head}")
    return repo, {**hub, "revision": pinned}
