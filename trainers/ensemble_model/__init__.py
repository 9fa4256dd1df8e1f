"""The ensemble as a transformers model: ``EnsembleConfig`` and ``EnsembleForCausalLM``, shipped as remote code.

The two modules here are self-contained (torch and transformers only) because ``trainers.ensemble`` copies them
into every ensemble repo and registers them through ``auto_map``; this package is their one source.
"""

from pathlib import Path

from .configuration_ensemble import COMBINE_MODES, EnsembleConfig
from .modeling_ensemble import REMOTE_CODE_FILES, EnsembleCache, EnsembleForCausalLM, vocabulary_hash

AUTO_MAP = {
    "AutoConfig": "configuration_ensemble.EnsembleConfig",
    "AutoModelForCausalLM": "modeling_ensemble.EnsembleForCausalLM",
}
CODE_DIR = Path(__file__).parent

__all__ = [
    "AUTO_MAP",
    "CODE_DIR",
    "COMBINE_MODES",
    "REMOTE_CODE_FILES",
    "EnsembleCache",
    "EnsembleConfig",
    "EnsembleForCausalLM",
    "vocabulary_hash",
]
