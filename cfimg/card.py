"""The model card: every fact needed to turn a model's output into a verdict, in one place.

It is saved in each checkpoint and written into the exported ONNX file's metadata, so that train,
eval, export, predict and any embedding program read the same class names, preprocessing,
temperature and thresholds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from cfimg import __version__
from cfimg.heads import HeadSpec
from cfimg.labels import CLASS_NAMES
from cfimg.preprocess import Preprocessing

VERDICT_GENUINE = "genuine"
VERDICT_COUNTERFEIT = "counterfeit"
VERDICT_UNCERTAIN = "uncertain"
# How the photos of one item (listing) combine into its p_counterfeit (cfimg.items.ITEM_RULES).
DEFAULT_ITEM_RULE = "max"


def is_counterfeit(p_counterfeit, threshold: float):
    """The verdict rule, for one probability or an array of them: at or above the threshold."""
    return p_counterfeit >= threshold


def verdict_at(p_counterfeit: float, threshold: float) -> str:
    """The two-way verdict word for one probability at `threshold`."""
    return VERDICT_COUNTERFEIT if is_counterfeit(p_counterfeit, threshold) else VERDICT_GENUINE


@dataclass(frozen=True)
class ModelCard:
    arch: str
    preprocessing: Preprocessing
    head: HeadSpec = field(default_factory=HeadSpec)  # pooling, dropout, classes of the head
    class_names: tuple[str, ...] = CLASS_NAMES
    threshold: float = 0.5  # p_counterfeit at or above this is a counterfeit verdict
    # Optional (low, high) band of p_counterfeit that answers "uncertain" instead of guessing.
    uncertain_band: tuple[float, float] | None = None
    temperature: float = 1.0  # logits are divided by this before the softmax (calibration)
    item_rule: str = DEFAULT_ITEM_RULE  # how an item's photos combine into its p_counterfeit
    # p_counterfeit of an item at or above this is a counterfeit item; None: as for a photo
    # (`threshold` and `uncertain_band`).
    item_threshold: float | None = None
    metrics: dict = field(default_factory=dict)  # headline validation metrics
    data_fingerprint: str = ""
    model_id: str = ""  # run name and epoch, or whatever identifies these weights
    cfimg_version: str = __version__
    created_utc: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    @property
    def counterfeit_index(self) -> int:
        return self.class_names.index("counterfeit")

    def verdict(self, p_counterfeit: float, threshold: float | None = None) -> str:
        """The verdict for one probability; an explicit `threshold` overrides the stored one."""
        if threshold is None and self.uncertain_band is not None:
            low, high = self.uncertain_band
            if low <= p_counterfeit < high:
                return VERDICT_UNCERTAIN
        return verdict_at(p_counterfeit, self.threshold if threshold is None else threshold)

    def item_verdict(self, p_item: float, threshold: float | None = None) -> str:
        """The verdict for an item's aggregated p_counterfeit (see cfimg.items): at the item
        threshold when one was fitted, else exactly as `verdict` judges a photo; an explicit
        `threshold` overrides both."""
        if threshold is None and self.item_threshold is None:
            return self.verdict(p_item)
        return verdict_at(p_item, self.item_threshold if threshold is None else threshold)

    def updated(self, **changes) -> ModelCard:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {
            "arch": self.arch,
            "head": self.head.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "class_names": list(self.class_names),
            "threshold": float(self.threshold),
            "uncertain_band": list(self.uncertain_band) if self.uncertain_band else None,
            "temperature": float(self.temperature),
            "item_rule": self.item_rule,
            "item_threshold": _optional_float(self.item_threshold),
            "metrics": dict(self.metrics),
            "data_fingerprint": self.data_fingerprint,
            "model_id": self.model_id,
            "cfimg_version": self.cfimg_version,
            "created_utc": self.created_utc,
        }

    @classmethod
    def from_dict(cls, values: dict) -> ModelCard:
        band = values.get("uncertain_band")
        return cls(
            arch=str(values["arch"]),
            head=HeadSpec.from_dict(values.get("head")),
            preprocessing=Preprocessing.from_dict(values["preprocessing"]),
            class_names=tuple(values.get("class_names", CLASS_NAMES)),
            threshold=float(values.get("threshold", 0.5)),
            uncertain_band=(float(band[0]), float(band[1])) if band else None,
            temperature=float(values.get("temperature", 1.0)),
            # Cards written before items existed judge an item as its most suspicious photo.
            item_rule=str(values.get("item_rule") or DEFAULT_ITEM_RULE),
            item_threshold=_optional_float(values.get("item_threshold")),
            metrics=dict(values.get("metrics") or {}),
            data_fingerprint=str(values.get("data_fingerprint", "")),
            model_id=str(values.get("model_id", "")),
            cfimg_version=str(values.get("cfimg_version", "")),
            created_utc=str(values.get("created_utc", "")),
        )

    def to_onnx_metadata(self) -> dict[str, str]:
        """ONNX metadata_props: plain strings, JSON where the value is structured.

        Flat keys (class_names, input_size, mean, std, threshold, temperature, ...) are for
        embedders; `cfimg_card` holds the whole card so cfimg reads back exactly what it wrote.
        """
        prep = self.preprocessing
        return {
            "cfimg_version": self.cfimg_version,
            "cfimg_card": json.dumps(self.to_dict(), sort_keys=True),
            "arch": self.arch,
            "pooling": self.head.pooling,
            "model_id": self.model_id,
            "class_names": json.dumps(list(self.class_names)),
            "counterfeit_index": str(self.counterfeit_index),
            "input_size": json.dumps([prep.img_size_px, prep.img_size_px]),
            "resize_shorter_side_px": str(prep.resize_px),
            "interpolation": prep.interpolation,
            "preprocessing": prep.describe(),
            "mean": json.dumps(list(prep.mean)),
            "std": json.dumps(list(prep.std)),
            "threshold": repr(float(self.threshold)),
            "uncertain_band": json.dumps(
                list(self.uncertain_band) if self.uncertain_band else None
            ),
            "temperature": repr(float(self.temperature)),
            "item_rule": self.item_rule,
            "item_threshold": json.dumps(_optional_float(self.item_threshold)),
            "data_fingerprint": self.data_fingerprint,
            "metrics": json.dumps(self.metrics, sort_keys=True),
        }

    @classmethod
    def from_onnx_metadata(cls, metadata: dict[str, str]) -> ModelCard:
        """Inverse of to_onnx_metadata; raises KeyError/ValueError on foreign metadata."""
        return cls.from_dict(json.loads(metadata["cfimg_card"]))


def _optional_float(value) -> float | None:
    return None if value is None else float(value)
