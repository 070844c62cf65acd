"""Class names, their order and the spellings users give them: a leaf every module may import.

Index 1 is the positive class, counterfeit; the model's output columns follow this order.
"""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = ("genuine", "counterfeit")
COUNTERFEIT_INDEX = CLASS_NAMES.index("counterfeit")

# Folder and CSV label spellings users actually have, mapped to the canonical class name.
LABEL_ALIASES: dict[str, str] = {
    "genuine": "genuine",
    "authentic": "genuine",
    "real": "genuine",
    "counterfeit": "counterfeit",
    "fake": "counterfeit",
    "replica": "counterfeit",
}


def label_index(name: str) -> int | None:
    """Index into CLASS_NAMES of a label spelling (any alias, any case), or None."""
    canonical = LABEL_ALIASES.get(name.strip().lower())
    return None if canonical is None else CLASS_NAMES.index(canonical)
