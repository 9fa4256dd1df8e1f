"""Configuration of a ScalingDown ensemble: which causal LMs it averages, with which weights, and how.

This file and ``modeling_ensemble.py`` are copied into every ensemble repo (``auto_map`` in its config.json), so
``AutoModelForCausalLM.from_pretrained(<ensemble repo>, trust_remote_code=True)`` loads the ensemble anywhere.
They import nothing but torch and transformers.
"""

from __future__ import annotations

from transformers import PretrainedConfig

COMBINE_MODES = ("logits", "logprobs")


class EnsembleConfig(PretrainedConfig):
    """An ensemble of causal LMs that share one tokenizer.

    Args:
        members: one dict per member. ``{"subfolder": "round-1"}`` is a model folder inside the ensemble repo;
            ``{"repo": "org/name", "revision": "<commit>"}`` is another repo pinned to a commit. Other keys
            (``size``, ``params_total``, ``source``...) are provenance and are not read when loading.
        weights: one non-negative weight per member (normalised to sum 1); ``None`` means uniform.
        combine: ``"logits"``: the weighted mean of the members' logits (a renormalised product of experts,
            equivalently the weighted mean of their log-probs up to a constant); ``"logprobs"``: the log of the
            weighted mean of their probabilities (a mixture; the output "logits" are then normalised log-probs).
        tokenizer_hash: identity of the shared vocabulary (sha256 of the token -> id map, as
            ``vocabulary_hash`` in ``modeling_ensemble.py`` computes it); checked against every member on load.
    """

    model_type = "scalingdown_ensemble"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        members: list[dict] | None = None,
        weights: list[float] | None = None,
        combine: str = "logits",
        tokenizer_hash: str | None = None,
        vocab_size: int | None = None,
        max_position_embeddings: int | None = None,
        use_cache: bool = True,
        **kwargs,
    ):
        self.members = [dict(m) for m in members or []]
        self.weights = None if weights is None else [float(w) for w in weights]
        self.combine = combine
        self.tokenizer_hash = tokenizer_hash
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.use_cache = use_cache
        kwargs.setdefault("tie_word_embeddings", False)  # the ensemble has no weights of its own
        super().__init__(**kwargs)
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` on a combine mode, member spec or weight list the model cannot use."""
        if self.combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {self.combine!r}")
        for index, member in enumerate(self.members):
            if not (member.get("subfolder") or member.get("repo")):
                raise ValueError(f"ensemble member {index} names neither a 'subfolder' nor a 'repo': {member}")
        if self.weights is not None:
            if len(self.weights) != len(self.members):
                raise ValueError(f"{len(self.weights)} weights for {len(self.members)} ensemble members")
            if any(w < 0 for w in self.weights) or not sum(self.weights) > 0:
                raise ValueError(f"ensemble weights must be non-negative with a positive sum, got {self.weights}")

    def normalised_weights(self) -> list[float]:
        """The members' weights, summing to 1 (uniform when none are given)."""
        if not self.members:
            return []
        weights = self.weights or [1.0] * len(self.members)
        total = sum(weights)
        return [w / total for w in weights]
