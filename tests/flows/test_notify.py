"""`make deploy`'s failure notification, end to end on a real Prefect server (SQLite).

A webhook receiver on loopback stands for Slack: `python -m flows.deploy` saves the apprise
block and the automation, a CLI run with a failed row emits matteflow.run.finished, and the
server's automation sends the notification to the receiver.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import yaml

from flows.notify import NotifyConfig
from tests.fakes.cli import run_command
from tests.fakes.prefect_stack import PrefectStack

REPO = Path(__file__).resolve().parents[2]


class Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            type(self).bodies.append(json.loads(raw or b"{}"))
        except json.JSONDecodeError:
            type(self).bodies.append({"raw": raw.decode(errors="replace")})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    bodies: ClassVar[list[dict[str, Any]]] = []
    handler = type("Handler", (Receiver,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_address[1]}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def sqlite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectStack]:
    with PrefectStack(tmp_path_factory.mktemp("notify-stack"), REPO) as stack:
        stack.start_server()
        yield stack


def test_notify_config_defaults() -> None:
    config = NotifyConfig()
    assert config.outcomes == ["failures", "failed"] and config.url_env == "MATTEFLOW_NOTIFY_URL"
    with pytest.raises(ValueError):
        NotifyConfig(outcomes=["ok"])  # type: ignore[list-item]


def test_run_with_failures_notifies_the_webhook(
    sqlite_stack: PrefectStack,
    receiver: tuple[str, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    url, bodies = receiver
    config = tmp_path / "deployment.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "notify-it",
                "work_pool": "notify-pool",
                "notify": {"block": "it-failures", "url_env": "IT_NOTIFY_URL"},
            }
        )
    )
    env = sqlite_stack.env(IT_NOTIFY_URL=url)
    deploy = subprocess.run(
        [sys.executable, "-m", "flows.deploy", "--config", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert "notification: automation" in deploy.stdout
    api = sqlite_stack.api_url
    [automation] = httpx.post(f"{api}/automations/filter", json={}, timeout=10).json()
    assert automation["trigger"]["expect"] == ["matteflow.run.finished"]
    assert automation["actions"][0]["type"] == "send-notification"

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id,video_url\nlost,{tmp_path}/lost.mp4\n")
    run = subprocess.run(
        run_command(manifest, tmp_path / "o", "night-notify"),
        cwd=REPO,
        env=sqlite_stack.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    deadline = time.monotonic() + 120  # the server's triggers and actions services run in turn
    while time.monotonic() < deadline and not bodies:
        time.sleep(0.5)
    assert bodies, "no notification reached the receiver"
    [body] = bodies
    assert body["title"] == "matteflow run night-notify: failed"
    assert "1 of 1 rows failed (1 failed)" in body["message"]
    assert "runs/night-notify" in body["message"] and "gallery.html" in body["message"]
    assert url not in json.dumps(body)  # the webhook URL (a secret) is not in the message
