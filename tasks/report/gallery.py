"""The run's gallery: a contact sheet per row and ``gallery.html`` to scroll through them.

Failed rows come first, then flagged ones (an output with verification reasons), then the rest
in manifest order; each card has its status and reason. Every link in the page is relative
(``sheets/row-00001.jpg``, ``../../videos/…``), so the run folder can be opened where it lies:
on disk, copied, or served from a bucket.
"""

from __future__ import annotations

import html
import logging
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.ledger.results import ResultRow
from tasks.report.tables import OK_STATUSES
from tasks.storage.store import Storage

GALLERY = "gallery.html"
SHEETS = "sheets"
MAX_SHEETS = 500  # sheets per run at most (problems first); later rows are listed without one
log = logging.getLogger(__name__)

SheetMaker = Callable[[ResultRow, str | None], bytes | None]


@dataclass(frozen=True)
class Card:
    row: ResultRow
    sheet: str | None  # relative to the gallery page


def rank(row: ResultRow) -> tuple[int, int]:
    """Failed first, then flagged (verification reasons on an output), then the rest."""
    if row.status.value not in OK_STATUSES:
        return (0, row.row)
    if row.verify_reasons:
        return (1, row.row)
    return (2, row.row)


def relative_link(storage: Storage, run_name: str, url: str | None) -> str | None:
    """``url`` relative to ``runs/{run_name}/`` when it lies under the storage root."""
    if not url:
        return None
    root = storage.url("")
    if url.startswith(root):
        rel = url[len(root) :].lstrip("/")
        return posixpath.relpath(rel, f"runs/{run_name}")
    if storage.is_local and url.startswith(storage.root + "/"):
        return posixpath.relpath(url[len(storage.root) + 1 :], f"runs/{run_name}")
    return url


def write_sheets(
    storage: Storage,
    run_name: str,
    rows: list[ResultRow],
    make: SheetMaker,
    inputs: dict[int, str],
) -> list[Card]:
    """A contact sheet per row (up to ``MAX_SHEETS``), written under ``runs/{run}/sheets/``.

    ``inputs`` maps row numbers to the real input URLs (rows hold redacted ones). A sheet that
    cannot be made leaves its card without an image; it never fails the run.
    """
    cards: list[Card] = []
    for n, row in enumerate(sorted(rows, key=rank)):
        sheet = None
        if n < MAX_SHEETS:
            try:
                data = make(row, inputs.get(row.row))
            except Exception as exc:  # a picture is a nicety: the run's report matters more
                log.warning("no contact sheet for row %d: %s: %s", row.row, type(exc).__name__, exc)
                data = None
            if data is not None:
                sheet = f"{SHEETS}/row-{row.row:05d}.jpg"
                storage.write_bytes(f"runs/{run_name}/{sheet}", data)
        cards.append(Card(row, sheet))
    return cards


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#f6f6f4;color:#222}
h1{font-size:1.3rem}.counts span{margin-right:1rem}
.card{background:#fff;border-radius:6px;padding:.8rem;margin:.8rem 0;box-shadow:0 1px 3px #0002}
.card img{display:block;margin-top:.5rem;max-width:100%}
.status{font-weight:600;padding:.1rem .5rem;border-radius:4px;color:#fff}
.status.bad{background:#c0392b}.status.flag{background:#d68910}.status.ok{background:#1e8449}
.card.bad{border-left:6px solid #c0392b}.card.flag{border-left:6px solid #d68910}
.card.ok{border-left:6px solid #1e8449}
.reason{color:#922;margin:.3rem 0}.meta{color:#555;font-size:.85rem}
.legend{color:#555;font-size:.9rem}
"""


def _card_html(card: Card, storage: Storage, run_name: str) -> str:
    row = card.row
    kind = {0: "bad", 1: "flag", 2: "ok"}[rank(row)[0]]
    esc = html.escape
    title = f"row {row.row}" + (f" · {esc(row.id)}" if row.id else "")
    parts = [
        f'<div class="card {kind}" id="row-{row.row}">',
        f'<div><span class="status {kind}">{esc(row.status.value)}</span> {title}</div>',
    ]
    reason = row.error or (f"checks: {row.verify_reasons}" if row.verify_reasons else "")
    if row.error_code or reason:
        code = f"<code>{esc(row.error_code.value)}</code> " if row.error_code else ""
        parts.append(f'<div class="reason">{code}{esc(reason)}</div>')
    meta = [f"input: {esc(row.video_url or '')}"]
    output = relative_link(storage, run_name, row.output_url)
    if output:
        meta.append(f'<a href="{esc(output)}">output</a>')
    for name in ("fg_fraction", "flicker", "cost_usd"):
        value: Any = getattr(row, name)
        if value is not None:
            meta.append(f"{name} {value:.4g}")
    parts.append(f'<div class="meta">{" · ".join(meta)}</div>')
    if card.sheet:
        parts.append(f'<img src="{esc(card.sheet)}" alt="contact sheet of row {row.row}">')
    parts.append("</div>")
    return "\n".join(parts)


def gallery_html(storage: Storage, run_name: str, cards: list[Card]) -> str:
    counts: dict[str, int] = {}
    for card in cards:
        counts[card.row.status.value] = counts.get(card.row.status.value, 0) + 1
    shown = "".join(f"<span>{html.escape(k)}: {v}</span>" for k, v in sorted(counts.items()))
    body = "\n".join(_card_html(c, storage, run_name) for c in cards)
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>matteflow {html.escape(run_name)}'
        f"</title><style>{STYLE}</style></head><body>"
        f"<h1>matteflow run {html.escape(run_name)}</h1><p class=counts>{shown}</p>"
        '<p class="legend">Each sheet: input | matte on a checkerboard | result over a colour, '
        "for a few frames. Failed and flagged rows first.</p>"
        f"{body}</body></html>\n"
    )


def write_gallery(
    storage: Storage,
    run_name: str,
    rows: list[ResultRow],
    make: SheetMaker,
    inputs: dict[int, str],
) -> str:
    """Contact sheets and ``runs/{run}/gallery.html``; returns the page's path in storage."""
    cards = write_sheets(storage, run_name, rows, make, inputs)
    rel = f"runs/{run_name}/{GALLERY}"
    storage.write_bytes(rel, gallery_html(storage, run_name, cards).encode())
    return rel


def sheet_maker(storage: Storage) -> SheetMaker:
    """Contact sheets of rows whose outputs lie in ``storage``; inputs read as the run read them."""
    from tasks.report.sheets import contact_sheet

    def make(row: ResultRow, input_url: str | None) -> bytes | None:
        reads_s3 = bool(input_url and input_url.startswith("s3://"))
        return contact_sheet(
            input_url,
            row.output_url,
            mask_url=row.mask_url,
            input_options=storage.input_options if reads_s3 else None,
            output_options=None if storage.is_local else storage.options,
        )

    return make
