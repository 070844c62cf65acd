"""`cfimg export`: one self-describing ONNX file, proven against PyTorch before it is written.

Everything a program needs to reproduce the CLI's answer (class names, resize rule, threshold,
input format...) goes into the file's `metadata_props`. The modules, by concept:

- contract: tensor names, input formats and how a file declares its format (also read by
  cfimg.engines; torch-free);
- graph: tracing the network with its preprocessing and temperature, static TF-'same' padding;
- pillow_resize: the --any-size input stage, Pillow's bilinear resize as ONNX nodes;
- images: the check and calibration images, decoded as `cfimg predict` does;
- verify: runs, parity with PyTorch, the accuracy gate, speed-ups;
- quantize, variants: the int8 and fp16 files and their checks;
- report: what was checked and written; exporter: export_onnx, the whole sequence.

The public names below are imported on first use, so that `import cfimg.export.contract` (which
`cfimg predict` needs) loads neither the exporter nor torch.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "export_onnx": "exporter",
    "default_output_path": "exporter",
    "variant_path": "variants",
    "ExportError": "report",
    "ExportReport": "report",
    "ExportedModel": "report",
    "Check": "report",
    "FP32_MAX_ABS_DP": "verify",
    "MAX_ACCURACY_DROP_POINTS": "verify",
    "feeds": "verify",
    "ort_session": "verify",
    "build_onnx_model": "graph",
    "CheckImages": "images",
    "load_images": "images",
    "unlabelled_images": "images",
    "INPUT_NAME": "contract",
    "OUTPUT_NAMES": "contract",
    "INPUT_FORMATS": "contract",
    "UINT8_NHWC": "contract",
    "ANY_SIZE": "contract",
    "FLOAT_NCHW": "contract",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
