"""The private library APIs ScalingDown relies on, in one place.

Each hook says which versions it was checked against and is named by a test in ``tests/test_compat.py`` that fails
when it disappears or changes signature, so an upgrade that breaks one fails there, with its name, instead of
somewhere downstream. Callers import these functions, never the private names themselves.
"""

from __future__ import annotations

import functools
from pathlib import Path

# ==== lm-eval: task YAML loading and HFLM generation ==============================================================
# Checked against lm_eval 0.4.12 and 0.4.13 (installed: 0.4.13, with transformers 5.24). ``_yaml_loader`` does not
# exist before 0.4.12; ``HFLM._model_generate(context, max_length, stop, **generation_kwargs)`` is unchanged from
# 0.4.9 to 0.4.13.


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
    """lm-eval's ``HFLM``, calling ``self.on_generation(context, output)`` after every batched ``generate``.

    The token ids a model produced are only visible inside HFLM (``generate_until`` returns decoded text), and
    counting them there is the only way to get tokens/s without re-tokenising.
    Private: ``HFLM._model_generate``, which ``HFLM.generate_until`` calls once per batch.
    """
    from lm_eval.models.huggingface import HFLM

    class HookedHFLM(HFLM):
        def on_generation(self, context, output) -> None:
            """Override: ``context`` is the padded prompt batch, ``output`` the prompts with their continuations."""

        def _model_generate(self, context, max_length, stop, **generation_kwargs):
            output = super()._model_generate(context, max_length, stop, **generation_kwargs)
            self.on_generation(context, output)
            return output

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
