"""A pre-training corpus as a dataset repo (``{ORG}/pretrain-corpus``): what ``make pretrain`` trains on.

    python -m datasets_builders.corpus                     # offline default: teacher-written documents + task questions
    python -m datasets_builders.corpus --config recipes/corpus/fineweb-edu.yaml      # a Hub dataset, streamed
    python -m datasets_builders.corpus --sources files --files 'notes/*.txt' --text_unit paragraph

Sources (``--sources``, comma-separated, in this order; ``sources.py``):

- ``synthetic``: the teachers write short documents on several topics in several styles (Cosmopedia-style
  requests, ``topics.py``), sampled and sharded under ``--work_dir`` as they are made, so an interrupted build
  resumes where it stopped.
- ``task``: the task's training questions, each with its worked solution when the source has one.
- ``files``: local files (``.txt``/``.md``: one document per file, paragraph or line, see ``--text_unit``;
  ``.jsonl``/``.json``/``.parquet``/``.csv``: one per row, from ``--text_column``).
- ``hub``: a Hub dataset streamed with ``datasets.load_dataset(..., streaming=True)``, the first
  ``--max_documents`` rows of its ``--text_column``; nothing else is downloaded.

Filters (``filters.py``) run in this order, each can be switched off, and every drop is counted per source in the
card (``card.py``): too short, refusals and moralising boilerplate (Dolphin-style), exact duplicates, near
duplicates (MinHash LSH, ``dedup.py``), and decontamination against the test split of every eval task that can be
read here (``eval_overlap.py``).
"""

from datasets_builders.corpus.arguments import CorpusArguments
from datasets_builders.corpus.build import main

__all__ = ["CorpusArguments", "main"]
