"""The files of a dataset repo: one parquet file per split and config, and the card entries that declare them.

Shared by every stage that publishes a dataset repo (rationales, leaderboard), so each is laid out the way
``push_to_hub`` lays one out and loads with plain ``load_dataset(repo, config)``.

Each card config carries ``description: content <hash of its parquet files>``. ``datasets`` keys the cache of a
local folder by the card's configs and ``dataset_info`` only (not by file names or mtimes), so without it a
re-pushed local repo with the same row counts (a leaderboard whose accuracies changed) is read stale from the
cache; the description is a ``BuilderConfig`` field, so the hash changes exactly when the content does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from datasets import Dataset, DatasetInfo, Features, SplitDict, SplitInfo

from scalingdown.compat import dataset_info_yaml


@dataclass
class RepoConfig:
    """One config of a dataset repo: one parquet file per split under ``data_dir/``, declared in the card."""

    name: str
    data_dir: str
    features: Features
    splits: dict[str, list[dict]]
    description: str = ""
    compression: str | None = None  # parquet codec; None keeps the writer's default (snappy)


def write_data_files(folder: Path, configs: list[RepoConfig]) -> dict:
    """Write ``{data_dir}/{split}-00000-of-00001.parquet`` per config; return the card's ``dataset_info`` and
    ``configs`` entries (pass them to ``DatasetCardData``)."""
    infos, card_configs = [], []
    for config in configs:
        data = Path(folder) / config.data_dir
        data.mkdir(parents=True, exist_ok=True)
        split_infos, download_size, content = SplitDict(), 0, hashlib.sha256()
        for split, rows in config.splits.items():
            # from_list([]) would write a parquet file without columns, which then fails to load
            columns = {name: [row[name] for row in rows] for name in config.features}
            dataset = Dataset.from_dict(columns, features=config.features)
            path = data / f"{split}-00000-of-00001.parquet"
            if config.compression:  # datasets' to_parquet sets snappy per column, so pyarrow writes this one
                pq.write_table(dataset.data.table, path, compression=config.compression)
            else:
                dataset.to_parquet(path)
            download_size += path.stat().st_size
            content.update(split.encode() + path.read_bytes())
            split_infos.add(SplitInfo(name=split, num_bytes=dataset.data.nbytes, num_examples=len(dataset)))
        info = DatasetInfo(
            features=config.features,
            splits=split_infos,
            download_size=download_size,
            dataset_size=sum(s.num_bytes for s in split_infos.values()),
        )
        infos.append({"config_name": config.name, **dataset_info_yaml(info)})
        card_configs.append(
            {
                "config_name": config.name,
                "description": f"content {content.hexdigest()[:16]}",
                "data_files": [
                    {"split": split, "path": f"{config.data_dir}/{split}-*.parquet"} for split in config.splits
                ],
            }
        )
    return {"dataset_info": infos, "configs": card_configs}
