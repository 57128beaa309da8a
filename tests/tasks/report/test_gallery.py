"""Contact sheets and the gallery page, without Prefect."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.ledger.jobs import Status
from tasks.ledger.results import ResultRow
from tasks.report.gallery import rank, relative_link, write_gallery
from tasks.report.sheets import FRAMES, TILE_HEIGHT, background_distance_matte, contact_sheet
from tasks.storage.store import Storage


def test_sheet_has_input_matte_and_result_per_frame(clips: dict[str, Path]) -> None:
    """The true alpha as the mask: the matte tile is white where it is 1, checkerboard else."""
    data = contact_sheet(
        str(clips["composite"]), str(clips["composite"]), mask_url=str(clips["truth"])
    )
    assert data is not None
    sheet = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert sheet.shape[0] == FRAMES * TILE_HEIGHT + (FRAMES - 1) * 2
    tile = (sheet.shape[1] - 4) // 3
    matte = sheet[:TILE_HEIGHT, tile + 2 : 2 * tile + 2]
    white = (matte > 240).all(axis=-1).mean()
    grey = ((matte > 140) & (matte < 215)).all(axis=-1).mean()  # checkerboard squares
    assert 0.1 < white < 0.9 and grey > 0.05


def test_sheet_of_a_failed_row_shows_its_input_or_nothing(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    only_input = contact_sheet(str(clips["silent"]), None)
    assert only_input is not None
    assert Image.open(io.BytesIO(only_input)).size[1] == FRAMES * TILE_HEIGHT + (FRAMES - 1) * 2
    assert contact_sheet(str(tmp_path / "gone.mp4"), None) is None


def test_opaque_output_matte_is_what_differs_from_its_background() -> None:
    rgba = np.full((20, 30, 4), 255, np.uint8)  # white background
    rgba[5:15, 10:20, :3] = (200, 30, 30)
    matte = background_distance_matte(rgba)
    assert matte[5:15, 10:20].min() == 255 and matte.sum() == 255 * 100


def test_gallery_orders_problems_first_and_links_relatively(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "out"))
    rows = [
        ResultRow(row=1, id="ok", status=Status.succeeded, output_url=storage.url("videos/a.webm")),
        ResultRow(row=2, id="flagged", status=Status.succeeded, verify_reasons="matte_flicker"),
        ResultRow(
            row=3, id="bad", status=Status.failed, error_code="input_not_found", error="gone"
        ),
    ]
    assert [r.id for r in sorted(rows, key=rank)] == ["bad", "flagged", "ok"]
    assert (
        relative_link(storage, "r/shards/001", storage.url("videos/a.webm"))
        == "../../../../videos/a.webm"
    )

    def make(row: ResultRow, input_url: str | None) -> bytes | None:
        if row.id == "flagged":
            raise ValueError("undecodable")  # a sheet that fails leaves its card without one
        return b"jpeg" if row.id == "ok" else None

    rel = write_gallery(storage, "night", rows, make, {})
    page = (tmp_path / "out" / rel).read_text()
    assert page.index('id="row-3"') < page.index('id="row-2"') < page.index('id="row-1"')
    assert '<img src="sheets/row-00001.jpg"' in page and page.count("<img ") == 1
    assert '<a href="../../videos/a.webm">' in page
    assert "input_not_found" in page and "matte_flicker" in page
    assert (tmp_path / "out/runs/night/sheets/row-00001.jpg").read_bytes() == b"jpeg"
