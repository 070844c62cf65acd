"""Contact sheet: per brand, a genuine photo beside counterfeit ones with their defect boxes drawn
and named, and close-ups of the defects, for eyeballing that defects are visible and plausible."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image, ImageDraw

from cfimg.errors import DatasetError
from cfimg.fileio import atomic_write_bytes
from cfimg.synth.generate import read_manifest
from cfimg.synth.lettering import font

BOX_COLOURS = [(255, 64, 64), (255, 200, 0), (0, 220, 255)]
LABEL_H = 22


def write_contact_sheet(
    manifest: str | Path,
    out_png: str | Path,
    *,
    pairs_per_brand: int = 1,
    tile_px: int = 320,
    zooms: int = 2,
) -> Path:
    """Rows of (genuine, counterfeit with boxes, close-ups of its defects), one row per brand
    and pair; counterfeits are chosen so that the sheet shows as many defect kinds as it can."""
    manifest = Path(manifest)
    try:
        rows = read_manifest(manifest)
    except OSError as exc:
        raise DatasetError(f"{manifest}: cannot read the manifest ({exc.strerror})") from exc
    root = manifest.parent
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["category"], row["brand"]), []).append(row)
    if not groups:
        raise DatasetError(f"{manifest}: the manifest lists no images")
    shown: set[str] = set()
    lines = []
    for key in sorted(groups):
        genuine = [r for r in groups[key] if r["label"] == "genuine"]
        fakes = [r for r in groups[key] if r["label"] == "counterfeit" and _visible(r)]
        for _ in range(pairs_per_brand):
            if not genuine or not fakes:
                break
            fake = max(fakes, key=lambda r: (_first_kind(r) not in shown, -fakes.index(r)))
            fakes.remove(fake)
            shown.update(r["kind"] for r in json.loads(fake["defect_boxes"]))
            lines.append((genuine.pop(0), fake))
    if not lines:
        raise DatasetError(f"{manifest}: no genuine/counterfeit pair of one brand to show")
    cols = 2 + zooms
    sheet = Image.new("RGB", (cols * tile_px, len(lines) * (tile_px + LABEL_H)), (24, 24, 26))
    draw = ImageDraw.Draw(sheet)
    for r, (genuine, fake) in enumerate(lines):
        y = r * (tile_px + LABEL_H)
        _tile(
            sheet, draw, root / genuine["path"], (0, y), tile_px, f"genuine {genuine['brand']}", []
        )
        boxes = [b for b in json.loads(fake["defect_boxes"]) if b["box"] is not None]
        _tile(
            sheet,
            draw,
            root / fake["path"],
            (tile_px, y),
            tile_px,
            f"counterfeit {fake['brand']}",
            boxes,
        )
        for z, box in enumerate([b for b in boxes if b["visible"]][:zooms]):
            _zoom(sheet, draw, root / fake["path"], (tile_px * (2 + z), y), tile_px, box, z)
    out_png = Path(out_png)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    atomic_write_bytes(out_png, buffer.getvalue())
    return out_png


def _visible(row: dict) -> bool:
    return any(b["visible"] for b in json.loads(row["defect_boxes"] or "[]"))


def _first_kind(row: dict) -> str:
    return row["defects"].split(";")[0]


def _load(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the image ({exc})") from exc


def _tile(sheet, draw, path, origin, tile_px, title, boxes) -> None:
    img = _load(path)
    scale = tile_px / max(img.size)
    img = img.resize(
        (round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS
    )
    x0, y0 = origin
    sheet.paste(img, (x0, y0 + LABEL_H))
    draw.text((x0 + 4, y0 + 3), title, font=font(14), fill=(235, 235, 235))
    for i, b in enumerate(boxes):
        colour = BOX_COLOURS[i % len(BOX_COLOURS)]
        bx0, by0, bx1, by1 = (v * scale for v in b["box"])
        rect = (x0 + bx0, y0 + LABEL_H + by0, x0 + bx1, y0 + LABEL_H + by1)
        draw.rectangle(rect, outline=colour, width=2 if b["visible"] else 1)
        name = b["kind"] + ("" if b["visible"] else " (cropped)")
        _label(draw, (rect[0], max(y0 + LABEL_H, rect[1] - 14)), name, colour)


def _zoom(sheet, draw, path, origin, tile_px, box, index) -> None:
    img = _load(path)
    x0, y0, x1, y1 = box["box"]
    side = min(max(x1 - x0, y1 - y0, 40) * 1.25, *img.size)
    # centred on the defect, but kept inside the photo
    cx = min(max((x0 + x1) / 2, side / 2), img.width - side / 2)
    cy = min(max((y0 + y1) / 2, side / 2), img.height - side / 2)
    crop = (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))
    zoom = img.crop(crop).resize((tile_px, tile_px), Image.Resampling.LANCZOS)
    sheet.paste(zoom, (origin[0], origin[1] + LABEL_H))
    colour = BOX_COLOURS[index % len(BOX_COLOURS)]
    draw.text(
        (origin[0] + 4, origin[1] + 3), f"close-up: {box['kind']}", font=font(14), fill=colour
    )


def _label(draw, xy, text, colour) -> None:
    fnt = font(12)
    x, y = xy
    w = fnt.getlength(text)
    draw.rectangle((x, y, x + w + 6, y + 14), fill=(0, 0, 0))
    draw.text((x + 3, y + 1), text, font=fnt, fill=colour)
