#!/usr/bin/env python3
"""Classify photos with a cfimg-exported ONNX model, using only onnxruntime, numpy and Pillow.

This is the embedding contract in runnable form: everything (class names, input size, resize
rule, threshold, uncertain band, input format) is read from the model file's metadata, and the
answers match `cfimg predict` on the same files within 1e-4.

    python scripts/embed_example.py model.onnx photo1.jpg photo2.png ...

prints one JSON line per photo: {"path", "verdict", "p_counterfeit"} or {"path", "error"};
exit status 3 when some photos could not be read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

BATCH = 32


def open_model(path: str, threads: int) -> tuple[ort.InferenceSession, dict]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Sleeping instead of spinning threads: spinning starves the rest of the program.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    band = json.loads(meta.get("uncertain_band", "null"))
    contract = {
        "class_names": json.loads(meta["class_names"]),
        "counterfeit_index": int(meta["counterfeit_index"]),
        "input_size": json.loads(meta["input_size"])[0],
        "resize_px": int(meta["resize_shorter_side_px"]),
        "interpolation": meta.get("interpolation", "bilinear"),
        "mean": np.asarray(json.loads(meta["mean"]), np.float32).reshape(1, 3, 1, 1),
        "std": np.asarray(json.loads(meta["std"]), np.float32).reshape(1, 3, 1, 1),
        "threshold": float(meta["threshold"]),
        "uncertain_band": tuple(band) if band else None,
        "input_format": meta.get("input_format", "uint8_nhwc"),
        "input_name": session.get_inputs()[0].name,
    }
    return session, contract


def decode(path: str, resize_px: int) -> Image.Image:
    """8-bit RGB with EXIF orientation applied. JPEGs are decoded at a reduced scale that keeps
    the shorter side >= resize_px (Pillow draft mode), as cfimg does; transparency goes on
    white."""
    with Image.open(path) as image:
        if image.format in ("JPEG", "MPO"):
            image.draft("RGB", (resize_px, resize_px))
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            white = Image.new("RGB", rgba.size, (255, 255, 255))
            white.paste(rgba, mask=rgba.getchannel("A"))
            return white
        return image.convert("RGB")


def resize_and_crop(image: Image.Image, resize_px: int, size: int, interpolation: str):
    """Shorter side to resize_px (other side floor(x * resize_px / shorter + 0.5)), Pillow
    resampling, centre crop size x size at ((w - size) // 2, (h - size) // 2)."""
    width, height = image.size
    shorter = min(width, height)
    new_w = resize_px if width <= height else math.floor(width * resize_px / shorter + 0.5)
    new_h = resize_px if height <= width else math.floor(height * resize_px / shorter + 0.5)
    if (new_w, new_h) != image.size:
        filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
        resample = filters.get(interpolation, Image.Resampling.NEAREST)
        image = image.resize((new_w, new_h), resample)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    crop = image.crop((left, top, left + size, top + size))
    return np.asarray(crop, dtype=np.uint8)


def verdict(p_counterfeit: float, contract: dict) -> str:
    names = contract["class_names"]
    band = contract["uncertain_band"]
    if band is not None and band[0] <= p_counterfeit < band[1]:
        return "uncertain"
    counterfeit = names[contract["counterfeit_index"]]
    genuine = names[1 - contract["counterfeit_index"]]
    return counterfeit if p_counterfeit >= contract["threshold"] else genuine


def classify(session, contract: dict, pixels: list[np.ndarray]) -> np.ndarray:
    """p_counterfeit for each image (crops; decoded photos for an any-size model)."""

    def run(feed: np.ndarray) -> np.ndarray:
        return session.run(["probabilities"], {contract["input_name"]: feed})[0]

    if contract["input_format"] == "uint8_hwc_any_size":  # one photo per run, any size
        rows = [run(photo) for photo in pixels]
    elif contract["input_format"] == "float_nchw":
        rows = []
        for start in range(0, len(pixels), BATCH):
            chw = np.stack(pixels[start : start + BATCH]).transpose(0, 3, 1, 2)
            rows.append(run((chw.astype(np.float32) / 255.0 - contract["mean"]) / contract["std"]))
    else:  # uint8_nhwc: a batch of model-sized crops
        rows = [run(np.stack(pixels[i : i + BATCH])) for i in range(0, len(pixels), BATCH)]
    return np.concatenate(rows)[:, contract["counterfeit_index"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .onnx file exported by `cfimg export`")
    parser.add_argument("images", nargs="+", help="photos to classify")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    args = parser.parse_args(argv)

    session, contract = open_model(args.model, args.threads)
    failed = 0
    for start in range(0, len(args.images), BATCH):  # streams: any number of photos
        failed += classify_and_print(session, contract, args.images[start : start + BATCH])
    return 3 if failed else 0


def classify_and_print(session, contract: dict, paths: list[str]) -> int:
    """One JSON line per path, in order; returns how many photos could not be read."""
    lines, pixels, where = [], [], []
    for path in paths:
        try:
            image = decode(path, contract["resize_px"])
        except Exception as exc:  # one bad photo must not stop the others
            lines.append({"path": path, "error": f"{type(exc).__name__}: {exc}"})
            continue
        if contract["input_format"] == "uint8_hwc_any_size":
            pixels.append(np.asarray(image, dtype=np.uint8))
        else:
            size, resize_px = contract["input_size"], contract["resize_px"]
            pixels.append(resize_and_crop(image, resize_px, size, contract["interpolation"]))
        where.append(len(lines))
        lines.append({"path": path})
    if pixels:
        for index, p in zip(where, classify(session, contract, pixels), strict=True):
            lines[index].update(verdict=verdict(float(p), contract), p_counterfeit=float(p))
    for line in lines:
        print(json.dumps(line), flush=True)
    return sum("error" in line for line in lines)


if __name__ == "__main__":
    sys.exit(main())
