"""The private library APIs of scalingdown/compat.py: each still exists with the signature and the behaviour we use.

A failure here names the API an upgrade broke; fix scalingdown/compat.py (and the versions it records), nowhere else.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from datasets import ClassLabel, DatasetInfo, Features, SplitDict, SplitInfo, Value
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCardData

from scalingdown.compat import dataset_info_yaml, load_task_yaml, set_hflm_batch_size

REPO = Path(__file__).resolve().parents[1]
P = inspect.Parameter


def parameters(function) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]


# -- lm-eval ----------------------------------------------------------------------------------------------------


def test_lm_eval_tasks_yaml_loader_load_yaml_signature_and_behaviour(tmp_path):
    from lm_eval.tasks._yaml_loader import load_yaml

    assert parameters(load_yaml)[:2] == [("path", P.POSITIONAL_OR_KEYWORD), ("resolve_func", P.KEYWORD_ONLY)]
    (tmp_path / "funcs.py").write_text("def shout(doc):\n    return doc['text'].upper()\n")
    (tmp_path / "_base_yaml").write_text("output_type: generate_until\ndoc_to_text: !function funcs.shout\n")
    (tmp_path / "child.yaml").write_text("include: _base_yaml\ntask: child\ndataset_path: here\n")
    config = load_task_yaml(tmp_path / "child.yaml")
    assert (config["task"], config["output_type"], config["dataset_path"]) == ("child", "generate_until", "here")
    assert config["doc_to_text"]({"text": "abc"}) == "ABC"  # the !function is imported, not left as a string


def test_lm_eval_hflm_model_generate_signature_and_call_site():
    """Tokens/s hang on ``HFLM._model_generate`` being called once per batch by ``generate_until``."""
    from lm_eval.models.huggingface import HFLM

    assert parameters(HFLM._model_generate) == [
        ("self", P.POSITIONAL_OR_KEYWORD),
        ("context", P.POSITIONAL_OR_KEYWORD),
        ("max_length", P.POSITIONAL_OR_KEYWORD),
        ("stop", P.POSITIONAL_OR_KEYWORD),
        ("generation_kwargs", P.VAR_KEYWORD),
    ]
    assert re.search(r"self\._model_generate\(", inspect.getsource(HFLM.generate_until))


def test_lm_eval_hflm_loglikelihood_tokens_signature_and_call_site():
    """Shared-context scoring hangs on ``loglikelihood`` handing tokenised pairs to ``_loglikelihood_tokens``."""
    from lm_eval.api.model import TemplateLM
    from lm_eval.models.huggingface import HFLM

    assert parameters(HFLM._loglikelihood_tokens) == [
        ("self", P.POSITIONAL_OR_KEYWORD),
        ("requests", P.POSITIONAL_OR_KEYWORD),
        ("disable_tqdm", P.POSITIONAL_OR_KEYWORD),
        ("override_bs", P.POSITIONAL_OR_KEYWORD),
    ]
    assert re.search(r"self\._loglikelihood_tokens\(", inspect.getsource(TemplateLM.loglikelihood))


def test_lm_eval_hflm_batch_size_per_gpu_is_what_batch_size_reads():
    from lm_eval.models.huggingface import HFLM

    assert isinstance(inspect.getattr_static(HFLM, "batch_size"), property)
    lm = HFLM.__new__(HFLM)  # no model: only the attribute and the property are under test
    for size in (7, 1):
        set_hflm_batch_size(lm, size)
        assert lm.batch_size == size


# -- datasets ---------------------------------------------------------------------------------------------------


def test_datasets_dataset_info_to_yaml_dict_is_what_a_card_declares():
    """The entry we write is read back by the public ``DatasetInfosDict.from_dataset_card_data``."""
    assert parameters(DatasetInfo._to_yaml_dict) == [("self", P.POSITIONAL_OR_KEYWORD)]
    features = Features({"question": Value("string"), "label": ClassLabel(names=["no", "yes"])})
    splits = SplitDict()
    splits.add(SplitInfo(name="train", num_bytes=120, num_examples=3))
    info = DatasetInfo(features=features, splits=splits, download_size=99, dataset_size=120)
    entry = {"config_name": "default", **dataset_info_yaml(info)}
    assert entry["features"] == [
        {"name": "question", "dtype": "string"},
        {"name": "label", "dtype": {"class_label": {"names": {"0": "no", "1": "yes"}}}},
    ]
    (read,) = DatasetInfosDict.from_dataset_card_data(DatasetCardData(dataset_info=[entry])).values()
    assert read.features == features and read.splits["train"].num_examples == 3 and read.download_size == 99


# -- callers go through compat ----------------------------------------------------------------------------------


def test_no_module_but_compat_names_these_private_apis():
    private = re.compile(
        r"_yaml_loader|\._model_generate\b|\._loglikelihood_tokens\b|_to_yaml_dict|\.batch_size_per_gpu\b"
    )
    offenders = [
        str(path.relative_to(REPO))
        for folder in ("scalingdown", "eval", "datasets_builders", "trainers", "space", "bench")
        for path in (REPO / folder).rglob("*.py")
        if path.name != "compat.py" and private.search(path.read_text())
    ]
    assert offenders == []


# -- transformers -----------------------------------------------------------------------------------------------


def test_transformers_kv_cache_argument_is_what_forward_and_generate_take(tiny_teacher_dir):
    """A prefilled cache passed by that name is used: the next token's logits match a full forward pass."""
    import warnings

    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from scalingdown.compat import kv_cache_argument

    name = kv_cache_argument()
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir).eval()
    ids = torch.tensor([[3, 7, 11, 5]])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the deprecated name would warn
        cache = DynamicCache(config=model.config)
        model(input_ids=ids[:, :3], use_cache=True, **{name: cache})
        step = model(input_ids=ids[:, 3:], use_cache=True, **{name: cache}).logits[0, -1]
        full = model(input_ids=ids).logits[0, -1]
    assert cache.get_seq_length() == 4
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-4)
