"""``make screenshots``: the Prefect UI's deployment form and a finished run, as PNGs in docs/.

Starts its own Prefect server (SQLite, with the UI) and one process worker, deploys the main
flow as ``make deploy`` does, runs a small sharded catalog on the local engine through the
deployment, and photographs the UI pages with headless Chromium (Debian's ``chromium``).
Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.media.samples import make_person_clip  # noqa: E402
from tests.fakes.prefect_stack import PrefectStack, wait_final  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--run-all-compositor-stages-before-draw",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise SystemExit("no chromium: run `make chromium` (apt-get install chromium chromium-driver)")


def screenshot(url: str, out: Path, *, size: str = "1400,1000", wait_ms: int = 15000) -> None:
    """One page, after its scripts have had ``wait_ms`` of virtual time to fetch and render."""
    with tempfile.TemporaryDirectory(prefix="matteflow-chromium-") as profile:
        cmd = [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={size}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={out}",
            url,
        ]
        subprocess.run(cmd, check=True, timeout=180, capture_output=True)
    print(f"{out}  <-  {url}")


def write_catalog(workdir: Path) -> Path:
    clip = make_person_clip(workdir / "astronaut_pan.mp4", width=160, height=120, seconds=1.0)
    rows = [
        {"id": "astronaut-transparent", "video_url": str(clip), "background": "transparent"},
        {"id": "astronaut-green", "video_url": str(clip), "background": "green"},
        {"id": "astronaut-white", "video_url": str(clip), "background": "white"},
        {"id": "broken-link", "video_url": "ftp://example.com/x.mp4", "background": ""},
        {"id": "astronaut-black", "video_url": str(clip), "background": "black"},
    ]
    manifest = workdir / "catalog.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    chromium()

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        tempfile.TemporaryDirectory(prefix="matteflow-ui-") as tmp,
        PrefectStack(Path(tmp), REPO, ui=True) as stack,
    ):
        workdir = Path(tmp)
        manifest = write_catalog(workdir)
        run_params = {
            "manifest": str(manifest),
            "endpoint": "local",
            "output": str(workdir / "output"),
            "run_name": "nightly-catalog",
            "background": "transparent",
            "shard_size": 2,
            "budget_usd": 5.0,
        }
        from flows.params import RunParams

        if "allow_local_inputs" in RunParams.model_fields:  # deployed runs refuse local files
            run_params["allow_local_inputs"] = True  # unless asked to (the sample clips are)
        config = {
            "name": "catalog",
            "work_pool": "matteflow",
            "source": ".",
            "parameters": run_params,
            "schedule": {"cron": "0 2 * * *", "timezone": "UTC", "active": False},
            "secret_blocks": {"FAL_KEY": "matteflow-fal-key"},
        }
        (workdir / "deployment.yaml").write_text(json.dumps(config))
        stack.start_server()
        subprocess.run(
            [sys.executable, "-m", "flows.deploy", "--config", str(workdir / "deployment.yaml")],
            cwd=REPO,
            env=stack.env(),
            check=True,
            timeout=300,
        )
        stack.start_worker("worker-1", "matteflow", limit=4)
        with (
            temporary_settings({PREFECT_API_URL: stack.api_url}),
            get_client(sync_client=True) as client,
        ):
            deployment = client.read_deployment_by_name("matteflow/catalog")
            parent = client.create_flow_run_from_deployment(
                deployment.id, parameters={"params": run_params}
            )
            try:
                parent = wait_final(client, parent.id, timeout=600)
            except TimeoutError as exc:
                raise SystemExit(str(exc)) from None
            print(f"run {parent.name}: {parent.state.name if parent.state else '?'}")
            artifacts = client.read_artifacts()
        by_key = {a.key: a for a in artifacts if a.flow_run_id == parent.id}
        ui = stack.ui_url
        shots = [
            (
                f"deployments/deployment/{deployment.id}?tab=Parameters",
                "ui-deployment.png",
                "1400,1000",
            ),
            (f"deployments/deployment/{deployment.id}/run", "ui-run-form.png", "1400,1600"),
            (f"runs/flow-run/{parent.id}", "ui-run-shards.png", "1400,1000"),
            (f"artifacts/artifact/{by_key['results'].id}", "ui-results.png", "1400,1000"),
            (f"artifacts/artifact/{by_key['cost-report'].id}", "ui-cost-report.png", "1400,1000"),
        ]
        for path, name, size in shots:
            # The deployment page fades in its runs list: give it longer.
            screenshot(
                f"{ui}/{path}",
                args.out / name,
                size=size,
                wait_ms=30000 if name == "ui-deployment.png" else 15000,
            )


if __name__ == "__main__":
    main()
