"""Synthetic product-photo benchmark: genuine and counterfeit bags and watches of invented brands,
whose counterfeit cues are small and local and hidden under large, label-blind photo variation."""

from cfimg.synth.defects import DEFECT_KINDS, DEFECTS_BY_CATEGORY, DIFFICULTIES, MAGNITUDES
from cfimg.synth.generate import MANIFEST_COLUMNS, MANIFEST_NAME, generate_dataset, read_manifest
from cfimg.synth.preview import write_contact_sheet

__all__ = [
    "DEFECT_KINDS",
    "DEFECTS_BY_CATEGORY",
    "DIFFICULTIES",
    "MAGNITUDES",
    "MANIFEST_COLUMNS",
    "MANIFEST_NAME",
    "generate_dataset",
    "read_manifest",
    "write_contact_sheet",
]
