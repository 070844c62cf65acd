"""Dataset sources (folder tree, split folders, CSV manifest), grouped splits and dataset checks.

Class names and their order are defined here once: index 1 is the positive class, counterfeit.
"""

from __future__ import annotations

from dataclasses import dataclass

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

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One labelled photo. `label` is an index into CLASS_NAMES; empty strings mean unknown."""

    path: str
    label: int
    category: str = ""
    brand: str = ""
    item_id: str = ""
    split: str = ""
