"""The catalog table: the latest outcome of every video across every run.

``{output}/catalog/latest.parquet`` has one row per video (the manifest's ``id``, or the input
URL where the manifest gave none: the ``video_key`` column) with the columns of the results
table. History is never rewritten: each run adds its rows as a part file
``catalog/runs/{run}/{stamp}.parquet``, then folds the parts that ``latest.parquet`` does not
yet hold into it (the parts it holds are listed in its Parquet metadata).

Two runs that close at once cannot lose each other's rows: each writes its part before it
folds, and after writing ``latest.parquet`` reads back which parts it holds; a part it can see
but latest lacks (a slower run's stale write won) makes it fold again. Both writes are whole
files (atomic rename locally, a single PUT on S3).
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.ledger.results import RESULT_SCHEMA, ResultRow, results_table
from tasks.storage.store import Storage

LATEST = "catalog/latest.parquet"
PARTS = "catalog/runs"
PARTS_KEY = b"matteflow.parts"  # Parquet metadata of latest.parquet: the parts it holds
CATALOG_SCHEMA = RESULT_SCHEMA.append(pa.field("video_key", pa.string()))
FOLD_ATTEMPTS = 8  # a fold lost to another run's write is redone; more than a few means trouble
log = logging.getLogger(__name__)


def video_key(row: ResultRow, id_given: bool) -> str:
    """What identifies a video across runs: its manifest id, else its (redacted) input URL."""
    if id_given and row.id:
        return row.id
    return row.video_url or row.id or str(row.row)


def catalog_part(rows: list[ResultRow], ids_given: set[int], closed: datetime) -> pa.Table:
    """A run's rows in the catalog's schema; a row without ``finished_at`` takes ``closed``."""
    filled = [r if r.finished_at else r.model_copy(update={"finished_at": closed}) for r in rows]
    table = results_table(filled)
    ordered = sorted(filled, key=lambda r: r.row)
    keys = pa.array([video_key(r, r.row in ids_given) for r in ordered], pa.string())
    return table.append_column(CATALOG_SCHEMA.field("video_key"), keys)


def _to_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _read(storage: Storage, rel: str) -> pa.Table | None:
    data = storage.read_bytes(rel)
    return None if data is None else pq.read_table(io.BytesIO(data))


def held_parts(table: pa.Table | None) -> list[str]:
    if table is None or not table.schema.metadata or PARTS_KEY not in table.schema.metadata:
        return []
    return list(json.loads(table.schema.metadata[PARTS_KEY]))


def list_parts(storage: Storage) -> list[str]:
    """Every run's part, relative to the storage root, oldest stamp first within a run."""
    base = storage.path(PARTS)
    try:
        found = storage.fs.find(base)
    except FileNotFoundError:
        return []
    rels = [
        f"{PARTS}/{str(p)[len(base) :].lstrip('/')}" for p in found if str(p).endswith(".parquet")
    ]
    return sorted(rels)


def latest_rows(table: pa.Table) -> pa.Table:
    """One row per ``video_key``: the one that finished last (ties: the later in the table)."""
    keys = table.column("video_key").to_pylist()
    finished = table.column("finished_at").to_pylist()
    floor = datetime.min.replace(tzinfo=UTC)
    best: dict[str, int] = {}
    for i, key in enumerate(keys):
        j = best.get(key)
        if j is None or (finished[i] or floor) >= (finished[j] or floor):
            best[key] = i
    return table.take(pa.array(sorted(best.values()), pa.int64()))


def fold(storage: Storage) -> list[str]:
    """Fold every part latest lacks into it and write it; returns the parts it now holds."""
    current = _read(storage, LATEST)
    held = held_parts(current)
    new = [p for p in list_parts(storage) if p not in set(held)]
    tables = [] if current is None else [current.select(CATALOG_SCHEMA.names).cast(CATALOG_SCHEMA)]
    for rel in new:
        part = _read(storage, rel)
        if part is not None:
            tables.append(part.select(CATALOG_SCHEMA.names).cast(CATALOG_SCHEMA))
    merged = latest_rows(pa.concat_tables(tables)) if tables else CATALOG_SCHEMA.empty_table()
    parts = [*held, *new]
    meta = {PARTS_KEY: json.dumps(parts).encode()}
    storage.write_bytes(LATEST, _to_bytes(merged.replace_schema_metadata(meta)))
    return parts


def update_catalog(
    storage: Storage, run_name: str, rows: Iterable[ResultRow], ids_given: set[int]
) -> str:
    """Add a run's rows to the catalog's history, then bring ``latest.parquet`` up to date;
    returns the part's path."""
    closed = datetime.now(UTC)
    stamp = closed.strftime("%Y%m%dT%H%M%S%fZ")
    part = f"{PARTS}/{run_name}/{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    storage.write_bytes(part, _to_bytes(catalog_part(list(rows), ids_given, closed)))
    for _ in range(FOLD_ATTEMPTS):
        fold(storage)
        holds = set(held_parts(_read(storage, LATEST)))
        if set(list_parts(storage)) <= holds:
            return part
    log.warning("catalog %s: other runs kept rewriting it; the next run folds the rest", LATEST)
    return part
