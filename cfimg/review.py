"""The review page: the K most suspicious photos of a `cfimg predict` result file, in one HTML file.

DIR/index.html is self-contained (inline CSS and JavaScript, no external URL, no server) and
references only images this module writes into DIR/images/: a downscaled copy of each photo and
its Grad-CAM overlay. The table sorts by any column (click a header) and filters by verdict and
path; the view is kept in the URL hash (#sort=p_counterfeit:desc&verdict=counterfeit&q=text), so
a link reopens the same view.

Given an items file (cfimg.items.write_items_file), the page shows the K most suspicious items
instead: one row per item, its photos side by side (most suspicious first, each with its heatmap
and score), sorted and filtered the same way (the filter also matches the item id).
"""

from __future__ import annotations

import heapq
import html
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from cfimg import __version__
from cfimg.errors import ImageLoadError, UsageError
from cfimg.fileio import atomic_write_bytes, atomic_write_text

DEFAULT_TOP_K = 50
DEFAULT_THUMB_PX = 640
IMAGES_DIR = "images"
MAX_PHOTOS_PER_ITEM = 8  # an item's most suspicious photos shown; the rest are counted


@dataclass(frozen=True)
class ReviewRow:
    rank: int
    path: str
    p_counterfeit: float
    verdict: str
    threshold: float
    model_id: str
    width: int | None
    height: int | None
    photo_src: str = ""  # relative to the page; empty when the photo could not be read
    overlay_src: str = ""  # empty without a checkpoint or when the photo could not be read
    model_p_counterfeit: float | None = None  # the heatmap model's own score for the photo
    note: str = ""


@dataclass(frozen=True)
class ReviewItem:
    rank: int
    item: object  # cfimg.items.ItemRow
    photos: list[ReviewRow]  # its most suspicious scored photos, highest p first
    n_hidden: int  # scored photos beyond MAX_PHOTOS_PER_ITEM


def top_suspicious(results_path: str | Path, top_k: int) -> tuple[list, Counter]:
    """The top_k scored rows by p_counterfeit (highest first) and the verdict counts of all rows,
    reading the file once with memory for top_k rows only."""
    from cfimg.results import read_results

    path = Path(results_path)
    if not path.is_file():
        raise UsageError(f"{path}: result file not found")
    return _top_by_p(read_results(path), top_k)


def _top_by_p(records, top_k: int) -> tuple[list, Counter]:
    """The top_k records with the highest p_counterfeit (None: not scored, never shown) and
    the verdict counts of all of them."""
    counts: Counter = Counter()
    heap: list = []
    for index, record in enumerate(records):
        counts[record.verdict] += 1
        if record.p_counterfeit is None:
            continue
        entry = (record.p_counterfeit, -index, record)  # ties: earlier records first
        if len(heap) < top_k:
            heapq.heappush(heap, entry)
        else:
            heapq.heappushpop(heap, entry)
    return [entry[2] for entry in sorted(heap, reverse=True)], counts


def write_review(
    results_path: str | Path,
    out_dir: str | Path,
    *,
    model_path: str | Path | None,
    top_k: int = DEFAULT_TOP_K,
    device: str = "auto",
    thumb_px: int = DEFAULT_THUMB_PX,
    on_warning: Callable[[str], None] | None = None,
    items_path: str | Path | None = None,
) -> Path:
    """Write OUT/index.html and OUT/images/* for the top_k most suspicious rows (or, with
    `items_path`, items); return the page.

    `model_path` must be the PyTorch checkpoint (.pt or run folder) for heatmaps; with None the
    page shows the photos without heatmaps. Photos that cannot be read any more keep their row,
    with the reason, and are reported through `on_warning`.
    """
    from cfimg.explain import Explainer

    if top_k < 1:
        raise UsageError(f"--top must be at least 1 (got {top_k})")
    if items_path is not None:
        items, counts = top_items(items_path, top_k)
        photo_rows = _result_rows(results_path, _shown_paths(items))
    else:
        rows, counts = top_suspicious(results_path, top_k)
    explainer = Explainer(model_path, device=device) if model_path is not None else None
    out_dir = Path(out_dir)
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)

    def reviewed(rank: int, row, tag: str) -> ReviewRow:
        review_row = _review_row(rank, row, explainer, out_dir, thumb_px, tag)
        if review_row.note and on_warning is not None:
            on_warning(f"{row.path}: {review_row.note}")
        return review_row

    if items_path is not None:
        shown = [
            _review_item(rank, item, photo_rows, reviewed) for rank, item in enumerate(items, 1)
        ]
        body = _items_body(shown)
    else:
        shown = [reviewed(rank, row, f"{rank:04d}") for rank, row in enumerate(rows, start=1)]
        body = _photos_body(shown)
    page = out_dir / "index.html"
    text = render_page(body, counts, Path(results_path), explainer, items_path=items_path)
    atomic_write_text(page, text)
    return page


def top_items(items_path: str | Path, top_k: int) -> tuple[list, Counter]:
    """The top_k scored items of an items file (highest p_counterfeit first) and the verdict
    counts of all its items, with memory for top_k items only."""
    from cfimg.items import read_items

    return _top_by_p(read_items(items_path), top_k)


def _shown_paths(items) -> set[str]:
    scored = (item.photo_paths[: item.n_photos - item.n_failed] for item in items)
    return {path for paths in scored for path in paths[:MAX_PHOTOS_PER_ITEM]}


def _result_rows(results_path: str | Path, paths: set[str]) -> dict:
    """The result rows of `paths` (path -> PredictionRow), reading the file once."""
    from cfimg.results import read_results

    if not Path(results_path).is_file():
        raise UsageError(f"{results_path}: result file not found")
    return {row.path: row for row in read_results(results_path) if row.path in paths}


def _review_item(rank: int, item, photo_rows: dict, reviewed) -> ReviewItem:
    scored = item.photo_paths[: item.n_photos - item.n_failed]
    photos = []
    for j, path in enumerate(scored[:MAX_PHOTOS_PER_ITEM], start=1):
        row = photo_rows.get(path)
        if row is None:
            photos.append(ReviewRow(rank, path, 0.0, "", 0.0, "", None, None,
                                    note="not in the result file"))  # fmt: skip
        else:
            photos.append(reviewed(rank, row, f"{rank:04d}-{j:02d}"))
    return ReviewItem(rank, item, photos, max(0, len(scored) - MAX_PHOTOS_PER_ITEM))


def _review_row(rank: int, row, explainer, out_dir: Path, thumb_px: int, tag: str) -> ReviewRow:
    from PIL import Image

    from cfimg.explain import display_size, encode_image, heat_overlay
    from cfimg.imageio import load_rgb

    base = ReviewRow(
        rank=rank,
        path=row.path,
        p_counterfeit=row.p_counterfeit,
        verdict=row.verdict,
        threshold=row.threshold,
        model_id=row.model_id,
        width=row.width,
        height=row.height,
    )
    try:
        photo = load_rgb(row.path)
    except ImageLoadError as exc:
        return replace(base, note=f"photo not shown: {exc.reason}")
    stem = f"{tag}-{_safe_name(Path(row.path).stem)}"
    photo_src = f"{IMAGES_DIR}/{stem}.photo.jpg"
    thumb = photo.resize(display_size(photo.size, thumb_px), Image.Resampling.BILINEAR)
    atomic_write_bytes(out_dir / photo_src, encode_image(thumb, "JPEG", quality=88))
    if explainer is None:
        return replace(base, photo_src=photo_src)
    heatmap, model_p = explainer.explain(photo)
    overlay = heat_overlay(photo, heatmap, explainer.card.preprocessing, max_side_px=thumb_px)
    overlay_src = f"{IMAGES_DIR}/{stem}.gradcam.jpg"
    atomic_write_bytes(out_dir / overlay_src, encode_image(overlay, "JPEG", quality=88))
    return replace(base, photo_src=photo_src, overlay_src=overlay_src, model_p_counterfeit=model_p)


def _safe_name(stem: str) -> str:
    """A file-name-safe, URL-safe short form of a photo's name."""
    kept = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in stem)
    return kept[:60] or "photo"


# ------------------------------------------------------------------------------------- HTML


@dataclass(frozen=True)
class _Body:
    """What differs between the photo page and the items page."""

    head: str  # the table's header cells
    rows: str
    verdicts: list[str]
    model_ids: list[str]
    count: int


def _photos_body(rows: list[ReviewRow]) -> _Body:
    return _Body(
        head=_PHOTO_HEAD,
        rows="\n".join(_row_html(row) for row in rows),
        verdicts=sorted({row.verdict for row in rows}),
        model_ids=sorted({row.model_id for row in rows if row.model_id}),
        count=len(rows),
    )


def _items_body(items: list[ReviewItem]) -> _Body:
    photos = [photo for item in items for photo in item.photos]
    return _Body(
        head=_ITEM_HEAD,
        rows="\n".join(_item_html(item) for item in items),
        verdicts=sorted({item.item.verdict for item in items}),
        model_ids=sorted({photo.model_id for photo in photos if photo.model_id}),
        count=len(items),
    )


def render_page(
    body: _Body, counts: Counter, results_path: Path, explainer, *, items_path=None
) -> str:
    esc = html.escape
    total = sum(counts.values())
    summary = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
    model_ids = body.model_ids
    notes = []
    if explainer is None:
        notes.append("No checkpoint given: photos are shown without heatmaps.")
    else:
        card = explainer.card
        heat_id = card.model_id or Path(explainer.model_path).name
        if model_ids and heat_id not in model_ids:
            notes.append(
                f"Scores come from {', '.join(model_ids)}, heatmaps from {heat_id}: "
                "a different model may look elsewhere."
            )
    facts = [("Result file", results_path.name)]
    if items_path is not None:
        facts.append(("Items file", Path(items_path).name))
    facts += [
        ("Items" if items_path is not None else "Rows", f"{total} ({summary})" if total else "0"),
        ("Shown", f"the {body.count} highest p_counterfeit"),
        ("Scored by", ", ".join(model_ids) or "unknown"),
    ]
    if explainer is not None:
        facts.append(
            (
                "Heatmaps",
                f"{explainer.method} of "
                f"{explainer.card.model_id or Path(explainer.model_path).name}; red = regions that "
                "raise p_counterfeit most; ring = peak; dimmed = outside the model's crop",
            )
        )
    facts.append(
        ("Written", f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by cfimg {__version__}")
    )
    fact_html = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    note_html = "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
    options = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in body.verdicts)
    return _PAGE.format(
        title=esc(f"cfimg review: {(Path(items_path) if items_path else results_path).name}"),
        css=_CSS,
        js=_JS,
        facts=fact_html,
        notes=note_html,
        head=body.head,
        rows=body.rows,
        options=options,
        count=body.count,
    )


def _figure(src: str, alt: str) -> str:
    if not src:
        return '<span class="missing">—</span>'
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}" loading="lazy" data-zoom>'


def _score_html(p_counterfeit: float) -> str:
    return (
        f"{p_counterfeit:.3f}"
        f'<div class="bar"><span style="width:{100 * p_counterfeit:.1f}%"></span></div>'
    )


def _row_attributes(data: dict) -> str:
    return " ".join(f'data-{k}="{html.escape(str(v))}"' for k, v in data.items())


def _row_html(row: ReviewRow) -> str:
    esc = html.escape

    size = f"{row.width}×{row.height}" if row.width and row.height else ""
    score_note = ""
    if (
        row.model_p_counterfeit is not None
        and abs(row.model_p_counterfeit - row.p_counterfeit) > 0.01
    ):
        score_note = f'<div class="sub">heatmap model: {row.model_p_counterfeit:.3f}</div>'
    note = f'<div class="sub warn">{esc(row.note)}</div>' if row.note else ""
    data = {
        "rank": row.rank,
        "p": f"{row.p_counterfeit:.6f}",
        "verdict": row.verdict,
        "path": row.path,
        "pixels": (row.width or 0) * (row.height or 0),
    }
    return (
        f'<tr class="row v-{esc(row.verdict)}" {_row_attributes(data)}>'
        f'<td class="num">{row.rank}</td>'
        f"<td>{_figure(row.overlay_src, 'Grad-CAM heatmap')}</td>"
        f"<td>{_figure(row.photo_src, 'photo')}</td>"
        f'<td class="num score">{_score_html(row.p_counterfeit)}'
        f"{score_note}</td>"
        f'<td><span class="verdict">{esc(row.verdict)}</span>'
        f'<div class="sub">threshold {row.threshold:.2f}</div></td>'
        f'<td class="path"><code>{esc(row.path)}</code>{note}</td>'
        f'<td class="num">{esc(size)}</td>'
        "</tr>"
    )


def _item_html(entry: ReviewItem) -> str:
    esc = html.escape
    item = entry.item
    data = {
        "rank": entry.rank,
        "p": f"{item.p_counterfeit:.6f}",
        "verdict": item.verdict,
        "path": " ".join((item.item_id, *item.photo_paths)),  # the filter matches any of them
    }
    photos = "".join(_item_photo_html(photo, i == 0) for i, photo in enumerate(entry.photos))
    more = []
    if entry.n_hidden:
        more.append(f"{entry.n_hidden} more photos not shown")
    if item.n_failed:
        more.append(f"{item.n_failed} photos could not be scored")
    more_html = f'<div class="sub">{esc("; ".join(more))}</div>' if more else ""
    return (
        f'<tr class="row v-{esc(item.verdict)}" {_row_attributes(data)}>'
        f'<td class="num">{entry.rank}</td>'
        f'<td class="path"><code>{esc(item.item_id)}</code>'
        f'<div class="sub">{item.n_photos} photos</div></td>'
        f'<td class="num score">{_score_html(item.p_counterfeit)}'
        f'<div class="sub">{esc(item.rule)}</div></td>'
        f'<td><span class="verdict">{esc(item.verdict)}</span>'
        f'<div class="sub">threshold {item.threshold:.2f}</div></td>'
        f'<td><div class="photos">{photos}</div>{more_html}</td>'
        "</tr>"
    )


def _item_photo_html(photo: ReviewRow, most_suspicious: bool) -> str:
    esc = html.escape
    images = _figure(photo.overlay_src, "Grad-CAM heatmap") if photo.overlay_src else ""
    images += _figure(photo.photo_src, "photo")
    caption = f"{photo.p_counterfeit:.3f} {esc(photo.verdict)}" if photo.verdict else ""
    flag = ' class="top"' if most_suspicious else ""
    note = f'<div class="sub warn">{esc(photo.note)}</div>' if photo.note else ""
    return (
        f'<figure{flag} data-photo="{esc(photo.path)}">{images}'
        f'<figcaption>{caption}<div class="sub"><code>{esc(Path(photo.path).name)}</code>'
        f"</div>{note}</figcaption></figure>"
    )


_PHOTO_HEAD = """<th data-key="rank" class="num">#</th>
<th class="nosort">Heatmap</th>
<th class="nosort">Photo</th>
<th data-key="p" class="num">p_counterfeit</th>
<th data-key="verdict">Verdict</th>
<th data-key="path">Path</th>
<th data-key="pixels" class="num">Size</th>"""

_ITEM_HEAD = """<th data-key="rank" class="num">#</th>
<th data-key="path">Item</th>
<th data-key="p" class="num">p_counterfeit</th>
<th data-key="verdict">Verdict</th>
<th class="nosort">Photos (most suspicious first; heatmap above photo)</th>"""

_CSS = """
:root { --red:#b22222; --amber:#c47800; --green:#1f773c; --line:#ddd; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  color: #222; background: #fafafa; }
header { padding: 16px 24px 8px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { font-size: 20px; margin: 0 0 8px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; }
dt { color: #666; } dd { margin: 0; }
.note { color: var(--amber); margin: 6px 0 0; }
.controls { display: flex; gap: 16px; align-items: center; padding: 10px 24px; }
.controls input { width: 320px; padding: 4px 6px; }
table { border-collapse: collapse; margin: 0 24px 24px; background: #fff; }
th, td { border-bottom: 1px solid var(--line); padding: 6px 10px; vertical-align: top;
  text-align: left; }
th { position: sticky; top: 0; background: #f0f0f0; cursor: pointer; user-select: none;
  white-space: nowrap; }
th[aria-sort="ascending"]::after { content: " ▲"; }
th[aria-sort="descending"]::after { content: " ▼"; }
th.nosort { cursor: default; }
td img { height: 150px; max-width: 260px; object-fit: contain; cursor: zoom-in;
  background: #eee; display: block; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.score { font-size: 16px; font-weight: 600; }
.bar { width: 80px; height: 6px; background: #eee; margin: 4px 0 0 auto; }
.bar span { display: block; height: 100%; background: var(--red); }
.verdict { font-weight: 600; text-transform: uppercase; font-size: 12px; padding: 2px 6px;
  border-radius: 3px; color: #fff; background: var(--green); }
.v-counterfeit .verdict { background: var(--red); }
.v-uncertain .verdict { background: var(--amber); }
.sub { color: #777; font-size: 12px; font-weight: normal; margin-top: 4px; }
.warn { color: var(--red); }
.path code { word-break: break-all; font-size: 12px; }
.missing { color: #aaa; }
#zoom { position: fixed; inset: 0; background: rgba(0,0,0,.85); display: none;
  align-items: center; justify-content: center; cursor: zoom-out; }
#zoom.open { display: flex; }
#zoom img { max-width: 95vw; max-height: 95vh; }
.photos { display: flex; gap: 10px; flex-wrap: wrap; }
.photos figure { margin: 0; padding: 4px; border: 2px solid transparent; }
.photos figure.top { border-color: var(--red); }
.photos figure img { height: 120px; margin-bottom: 2px; }
figcaption { font-size: 12px; }
"""

_JS = """
(function () {
  const body = document.getElementById('rows');
  const rows = Array.from(body.querySelectorAll('tr.row'));
  const headers = Array.from(document.querySelectorAll('th[data-key]'));
  const verdictSelect = document.getElementById('verdict');
  const search = document.getElementById('search');
  const shown = document.getElementById('shown');
  const state = { key: 'p', dir: 'desc', verdict: '', q: '' };
  const numeric = { rank: true, p: true, pixels: true };

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const sort = (params.get('sort') || '').split(':');
    const aliases = { p_counterfeit: 'p', size: 'pixels' };
    const key = aliases[sort[0]] || sort[0];
    if (headers.some(h => h.dataset.key === key)) {
      state.key = key;
      state.dir = sort[1] === 'asc' ? 'asc' : 'desc';
    }
    state.verdict = params.get('verdict') || '';
    state.q = params.get('q') || '';
  }
  function writeHash() {
    const params = new URLSearchParams();
    params.set('sort', state.key + ':' + state.dir);
    if (state.verdict) params.set('verdict', state.verdict);
    if (state.q) params.set('q', state.q);
    history.replaceState(null, '', '#' + params.toString());
  }
  function render() {
    const sign = state.dir === 'asc' ? 1 : -1;
    const key = state.key;
    rows.sort(function (a, b) {
      const x = a.dataset[key], y = b.dataset[key];
      const order = numeric[key] ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return sign * order || parseFloat(a.dataset.rank) - parseFloat(b.dataset.rank);
    });
    const q = state.q.toLowerCase();
    let visible = 0;
    rows.forEach(function (row) {
      const ok = (!state.verdict || row.dataset.verdict === state.verdict) &&
        (!q || row.dataset.path.toLowerCase().includes(q));
      row.hidden = !ok;
      if (ok) visible += 1;
      body.appendChild(row);
    });
    headers.forEach(function (h) {
      if (h.dataset.key === key) {
        h.setAttribute('aria-sort', state.dir === 'asc' ? 'ascending' : 'descending');
      } else {
        h.removeAttribute('aria-sort');
      }
    });
    verdictSelect.value = state.verdict;
    search.value = state.q;
    shown.textContent = visible + ' of ' + rows.length + ' shown';
    document.body.dataset.sort = key + ':' + state.dir;
    document.body.dataset.visible = String(visible);
  }
  headers.forEach(function (h) {
    h.addEventListener('click', function () {
      const key = h.dataset.key;
      state.dir = state.key === key && state.dir === 'desc' ? 'asc' : 'desc';
      if (state.key !== key && !numeric[key]) state.dir = 'asc';
      state.key = key;
      writeHash();
      render();
    });
  });
  verdictSelect.addEventListener('change', function () {
    state.verdict = verdictSelect.value; writeHash(); render();
  });
  search.addEventListener('input', function () {
    state.q = search.value; writeHash(); render();
  });
  const zoom = document.getElementById('zoom');
  const zoomImg = zoom.querySelector('img');
  body.addEventListener('click', function (event) {
    if (event.target.matches('img[data-zoom]')) {
      zoomImg.src = event.target.getAttribute('src');
      zoom.classList.add('open');
    }
  });
  zoom.addEventListener('click', function () { zoom.classList.remove('open'); });
  document.addEventListener('keydown', function (event) {
    if (event.key === 'Escape') zoom.classList.remove('open');
  });
  window.addEventListener('hashchange', function () { readHash(); render(); });
  readHash();
  render();
  document.body.dataset.ready = '1';
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<dl>{facts}</dl>
{notes}
</header>
<div class="controls">
<label>Verdict <select id="verdict"><option value="">all</option>{options}</select></label>
<label>Path contains <input id="search" type="search" placeholder="filter by path"></label>
<span id="shown">{count} shown</span>
</div>
<table>
<thead><tr>
{head}
</tr></thead>
<tbody id="rows">
{rows}
</tbody>
</table>
<div id="zoom"><img alt="enlarged image"></div>
<script>{js}</script>
</body>
</html>
"""
