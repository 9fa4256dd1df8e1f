"""The private library APIs ScalingDown relies on, in one place.

Each hook says which versions it was checked against and is named by a test in ``tests/test_compat.py`` that fails
when it disappears or changes signature, so an upgrade that breaks one fails there, with its name, instead of
somewhere downstream. Callers import these functions, never the private names themselves.
"""

from __future__ import annotations

import functools
import logging
import types
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

logger = logging.getLogger("scalingdown.compat")

# ==== lm-eval: task YAML loading and HFLM generation ==============================================================
# Checked against lm_eval 0.4.12 and 0.4.13 (installed: 0.4.13, with transformers 5.24 and 5.25). ``_yaml_loader``
# does not exist before 0.4.12; ``HFLM._model_generate(context, max_length, stop, **generation_kwargs)`` is unchanged
# from 0.4.9 to 0.4.13; ``HFLM._loglikelihood_tokens(requests, disable_tqdm, override_bs)`` was checked on 0.4.13.


def load_task_yaml(path: str | Path) -> dict:
    """A task YAML as a plain dict, ``include:`` merged and ``!function`` resolved.

    lm-eval builds a task from a dict as it is (no merge with the registered YAML), so overriding one key
    (``dataset_path``) needs the whole resolved config; 0.4.x has no public loader for it.
    Private: ``lm_eval.tasks._yaml_loader.load_yaml``.
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(str(path), resolve_func=True)


@functools.cache
def hflm_with_generation_hook() -> type:
    """lm-eval's ``HFLM``, calling ``self.on_generation(context, output)`` after every batched ``generate``, which
    ``self.generate_instead`` may do itself (the CTranslate2 teacher backend), and letting
    ``self.loglikelihood_instead`` score the tokenised (context, continuation) pairs of log-likelihood requests.

        The token ids a model produced are only visible inside HFLM (``generate_until`` returns decoded text), and
        counting them there is the only way to get tokens/s without re-tokenising.
        Private: ``HFLM._model_generate``, which ``HFLM.generate_until`` calls once per batch, and
        ``HFLM._loglikelihood_tokens(requests, disable_tqdm, override_bs)``, which ``loglikelihood`` calls with
        ((context, continuation), context ids, continuation ids) triples once they are tokenised.
    """
    from lm_eval.models.huggingface import HFLM

    class HookedHFLM(HFLM):
        def on_generation(self, context, output) -> None:
            """Override: ``context`` is the padded prompt batch, ``output`` the prompts with their continuations."""

        def generate_instead(self, context, max_length, stop, **generation_kwargs):
            """Override to generate another way (same arguments and result as HFLM's); None: HFLM's own."""
            return None

        def _model_generate(self, context, max_length, stop, **generation_kwargs):
            output = self.generate_instead(context, max_length, stop, **generation_kwargs)
            if output is None:
                output = super()._model_generate(context, max_length, stop, **generation_kwargs)
            self.on_generation(context, output)
            return output

        def loglikelihood_instead(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]] | None:
            """Override to score (context ids, continuation ids) pairs another way; None: HFLM's own."""
            return None

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
            results = self.loglikelihood_instead([(context, continuation) for _, context, continuation in requests])
            if results is None:
                return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
            for (strings, _, _), result in zip(requests, results, strict=True):
                self.cache_hook.add_partial("loglikelihood", strings, result)
            return results

    return HookedHFLM


def set_hflm_batch_size(lm, batch_size: int) -> None:
    """Change a loaded ``HFLM``'s batch size (to replay requests one by one for batch-1 latency).

    Private: ``HFLM.batch_size_per_gpu``, the attribute behind the read-only ``HFLM.batch_size`` property.
    """
    lm.batch_size_per_gpu = batch_size


# ==== datasets: dataset card metadata =============================================================================
# Checked against datasets 5.2.0 (installed).


def dataset_info_yaml(info) -> dict:
    """A ``datasets.DatasetInfo`` as the ``dataset_info`` entry of a dataset card's YAML (features, splits, sizes).

    ``push_to_hub`` writes the same entry; the public route (``DatasetInfosDict.to_dataset_card_data``) rewrites a
    whole card's metadata instead of returning one entry. Private: ``DatasetInfo._to_yaml_dict``.
    """
    return info._to_yaml_dict()


# ==== transformers: the KV cache argument ========================================================================
# transformers 5.24 renamed the ``past_key_values`` argument of ``forward``/``generate`` to ``cache``; the old name
# warns and goes in 6.0, and 5.0-5.23 know only it. Checked against transformers 5.24.0 and 5.25.0 (pinned).


@functools.cache
def kv_cache_argument() -> str:
    """The name ``model(...)`` and ``model.generate(...)`` take a prefilled KV cache by: ``cache`` or
    ``past_key_values``."""
    import inspect

    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


# ==== torch: int8 dynamic quantisation of linear layers ============================================================
# ``torch.ao.quantization.quantize_dynamic`` is deprecated in favour of torchao (which has no fast CPU int8 path
# without torch.compile); it still ships in torch 2.13 (installed), which is what this was checked against.


def int8_linear(model):
    """``model`` (in place) with every ``nn.Linear`` holding int8 weights and quantising its input per call."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


# ==== TRL: the student forward hook (trainers/student_trainer.py) ===============================================
# Private: TRL's SFTTrainer.__init__ replaces the model's ``forward`` with one that takes ``fused_lm_head=True``
# (``trl.trainer.utils.add_fused_lm_head``) and returns ``trl.trainer.utils.FusedCausalLMOutput``. The students wrap
# that same bound forward, so that off-GPU the LM head scores labelled positions only and ``distillation=`` calls run
# the chunked KD objective, while DDP and PEFT wrappers still see an ordinary ``model(...)`` call.
# Test: tests/test_student_trainer.py::test_compat_student_forward_hook_is_checked_against_the_installed_trl.

STUDENT_FORWARD_CHECKED = {"transformers": "5.25.0", "trl": "1.16.0"}


def student_forward_versions_differ() -> dict[str, tuple[str, str]]:
    """``{package: (checked, installed)}`` where the installed version is not the one the hook was checked against."""
    installed = {name: version(name) for name in STUDENT_FORWARD_CHECKED}
    return {
        name: (checked, installed[name])
        for name, checked in STUDENT_FORWARD_CHECKED.items()
        if installed[name] != checked
    }


def patch_student_forward(
    model,
    distillation_forward: Callable,
    compact_forward: Callable,
    kernel_devices: tuple[str, ...],
) -> None:
    """Wrap the model's TRL-patched ``forward``: ``distillation=`` calls go to ``distillation_forward(self, kwargs,
    labels, targets)``; ``fused_lm_head=True`` calls off ``kernel_devices`` go to ``compact_forward(self, kwargs,
    labels, shift_labels, num_items_in_batch)``; every other call to TRL's forward unchanged."""
    differ = student_forward_versions_differ()
    if differ:
        logger.warning("the student forward hook was checked against other versions: %s", differ)
    fused_forward = model.forward

    def forward(
        self,
        *args,
        fused_lm_head=False,
        distillation=None,
        labels=None,
        shift_labels=None,
        num_items_in_batch=None,
        **kwargs,
    ):
        if distillation is not None:
            return distillation_forward(self, kwargs, labels, distillation)
        if not fused_lm_head or args or kwargs.get("output_router_logits") or self.device.type in kernel_devices:
            return fused_forward(
                *args,
                fused_lm_head=fused_lm_head,
                labels=labels,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        return compact_forward(self, kwargs, labels, shift_labels, num_items_in_batch)

    model.forward = types.MethodType(forward, model)


def __getattr__(name: str):
    """``FusedCausalLMOutput`` (private module path ``trl.trainer.utils``), imported only when a trainer asks."""
    if name == "FusedCausalLMOutput":
        from trl.trainer.utils import FusedCausalLMOutput

        return FusedCausalLMOutput
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
