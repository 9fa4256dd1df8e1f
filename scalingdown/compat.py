"""Where ScalingDown leans on other libraries' private behaviour: each hook in its own section, pinned to the
versions it was checked against, and named by a test (tests/test_compat_*.py or the test the section cites)."""

from __future__ import annotations

import logging
import types
from collections.abc import Callable
from importlib.metadata import version

# Student forward hook: TRL's output type, from a private module path (see that section below).
from trl.trainer.utils import FusedCausalLMOutput  # noqa: F401

logger = logging.getLogger("scalingdown.compat")


# == Student forward hook (trainers/student_trainer.py) ==========================================================
# Private: TRL's SFTTrainer.__init__ replaces the model's ``forward`` with one that takes ``fused_lm_head=True``
# (``trl.trainer.utils.add_fused_lm_head``) and returns ``trl.trainer.utils.FusedCausalLMOutput``. The students wrap
# that same bound forward, so that off-GPU the LM head scores labelled positions only and ``distillation=`` calls run
# the chunked KD objective, while DDP and PEFT wrappers still see an ordinary ``model(...)`` call.
# Test: tests/test_student_trainer.py::test_compat_student_forward_hook_is_checked_against_the_installed_trl.

STUDENT_FORWARD_CHECKED = {"transformers": "5.24.0", "trl": "1.16.0"}


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
