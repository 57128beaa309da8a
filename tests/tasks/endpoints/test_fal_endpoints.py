"""pixelcut and birefnet input schemas: enums, defaults, cross-field rules, request bodies."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.params import RunParams
from tasks.endpoints import EndpointName, endpoint_info
from tasks.endpoints.birefnet import BirefnetOptions
from tasks.endpoints.birefnet import arguments as birefnet_arguments
from tasks.endpoints.pixelcut import PixelcutOptions
from tasks.endpoints.pixelcut import arguments as pixelcut_arguments
from tasks.fal.files import parse_outputs
from tasks.manifest.plan import plan_jobs
from tasks.manifest.read import Manifest, ManifestRow
from tests.tasks.endpoints.test_wire_form import BIREFNET_DEFAULTS


def test_pixelcut_defaults_and_body() -> None:
    opts = PixelcutOptions()
    assert pixelcut_arguments(opts, "https://x/v.mp4") == {
        "video_url": "https://x/v.mp4",
        "background": "transparent",
        "output_format": "webm_vp9",
    }
    custom = PixelcutOptions(background="custom", background_color="#0AFF10")
    body = pixelcut_arguments(custom, "u")
    assert body["background_color"] == {"r": 10, "g": 255, "b": 16}
    assert body["output_format"] == "mp4_h264"
    with pytest.raises(ValidationError, match="carries no alpha"):
        PixelcutOptions(output_format="mov_h265")
    with pytest.raises(ValidationError, match="only used with background=custom"):
        PixelcutOptions(background="white", background_color="1,2,3")


def test_birefnet_defaults_and_rules() -> None:
    opts = BirefnetOptions()
    body = birefnet_arguments(opts, "u")
    assert body == {"video_url": "u", **BIREFNET_DEFAULTS}
    assert opts.transparent and opts.resolved_format.value == "webm_vp9"
    assert not BirefnetOptions(video_output_type="X264 (.mp4)").transparent
    with pytest.raises(ValidationError, match="2304x2304 needs model"):
        BirefnetOptions(operating_resolution="2304x2304")
    assert BirefnetOptions(model="General Use (Dynamic)", operating_resolution="2304x2304")
    with pytest.raises(ValidationError):
        BirefnetOptions(video_quality="ultra")
    with pytest.raises(ValidationError):
        BirefnetOptions(background="white")  # pixelcut's option, not birefnet's


def test_bad_row_options_make_the_row_invalid_before_sending() -> None:
    rows = [
        ManifestRow(row=1, id="a", video_url="https://x/a.mp4", overrides={"model": "Matting"}),
        ManifestRow(row=2, id="b", video_url="https://x/b.mp4", overrides={"model": "Huge"}),
        ManifestRow(
            row=3,
            id="c",
            video_url="https://x/c.mp4",
            overrides={"operating_resolution": "2304x2304"},
        ),
        ManifestRow(row=4, id="d", video_url="https://x/d.mp4", overrides={"output_mask": "true"}),
    ]
    plan = plan_jobs(Manifest("m.csv", rows), endpoint_info("birefnet"), {"video_quality": "low"})
    assert [j.id for j in plan.jobs] == ["a", "d"]
    assert plan.jobs[0].params["model"] == "Matting"
    assert plan.jobs[1].params["output_mask"] is True
    assert all(j.params["video_quality"] == "low" for j in plan.jobs)
    reasons = {r["id"]: r["error"] for r in plan.invalid}
    assert "model" in reasons["b"] and "2304x2304" in reasons["c"]


def test_run_options_must_belong_to_the_endpoint() -> None:
    RunParams(manifest="m.csv", endpoint=EndpointName.birefnet, model="Portrait")
    with pytest.raises(ValidationError, match="model: not an option of endpoint pixelcut"):
        RunParams(manifest="m.csv", endpoint=EndpointName.pixelcut, model="Portrait")


def test_outputs_keep_fal_metadata_but_not_inline_data() -> None:
    out = parse_outputs(
        {
            "video": {"url": "data:video/webm;base64,AAAA", "file_size": 3, "num_frames": 8},
            "mask_video": None,
        }
    )
    assert out.video.metadata() == {"url": "data:…", "file_size": 3, "num_frames": 8}
    with pytest.raises(ValidationError):
        parse_outputs({"images": []})
