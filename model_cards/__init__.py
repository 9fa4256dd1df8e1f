"""Card templates, rendered with ``huggingface_hub`` card classes."""

from pathlib import Path

TEMPLATES = Path(__file__).parent


def template_path(name: str) -> str:
    """Path of one template in this folder, e.g. ``template_path("dataset_card.md")``."""
    return str(TEMPLATES / name)
