"""On-policy distillation (``make train METHOD=gkd``): the student samples answers to the training questions and
the teacher scores every token of them, through TRL's own ``GKDTrainer`` (Agarwal et al. 2024, "On-Policy
Distillation of Language Models"). A share ``lmbda`` of the batches are the student's own samples (the rest the
dataset's rationales); ``beta`` interpolates the generalised Jensen-Shannon divergence between forward KL (0) and
reverse KL (1); ``temperature`` is the sampling and loss temperature. The names are TRL's.

The teacher is loaded whole and must speak the student's tokenizer (``trainers.kd.load_online_teacher``); this module
adds only what the model card and the leaderboard need.
"""

from __future__ import annotations

import dataclasses

from datasets import Dataset
from trl import SFTConfig
from trl.experimental.gkd import GKDConfig, GKDTrainer


def gkd_config(training_args: SFTConfig, kd_args) -> GKDConfig:
    """The run's SFT settings as TRL's ``GKDConfig``, with the on-policy options of ``kd_args``."""
    values = {f.name: getattr(training_args, f.name) for f in dataclasses.fields(SFTConfig) if f.init}
    values.update(
        lmbda=kd_args.lmbda,
        beta=kd_args.beta,
        temperature=kd_args.temperature,
        max_new_tokens=kd_args.max_new_tokens,
        assistant_only_loss=False,  # GKD's ChatML collator masks the prompt itself
    )
    return GKDConfig(**values)


def gkd_trainer(model, teacher_model, training_args: SFTConfig, kd_args, rows: Dataset, tokenizer, peft_config):
    """TRL's ``GKDTrainer`` over the rationale conversations (its collator tokenizes ``messages`` itself)."""
    return GKDTrainer(
        model=model,
        teacher_model=teacher_model,
        args=gkd_config(training_args, kd_args),
        train_dataset=rows.select_columns(["messages"]),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
