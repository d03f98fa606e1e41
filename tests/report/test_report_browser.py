"""report.html in headless Chromium: it renders, logs nothing to the console and fetches nothing.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``); skipped without /usr/bin/chromium.
The page's own network requests are read from Chromium's net log: they are the requests whose network
isolation key is the page's ``file://`` site (Chromium's background requests, update checks and the like, have
other keys). Console messages come from ``--enable-logging=stderr`` as ``CONSOLE`` lines.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.slow,  # each test starts a headless Chromium
              pytest.mark.skipif(not CHROMIUM.is_file(), reason="headless check needs Debian's chromium package "
                                 "(apt-get install -y chromium): /usr/bin/chromium is absent")]


def _open(page: Path, tmp: Path) -> tuple[list[str], list[str], Path]:
    """Console lines and the page's network requests while Chromium renders ``page``; and the screenshot."""
    shot, netlog = tmp / f"{page.stem}.png", tmp / f"{page.stem}-net.json"
    proc = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--screenshot={shot}",
                           "--window-size=1280,2000", "--enable-logging=stderr", "--v=0", f"--log-net-log={netlog}",
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requests = [e["params"]["url"] for e in log["events"]
                if e["type"] == start and "file://" in str(e.get("params", {}).get("network_isolation_key", ""))]
    return console, requests, shot


def test_the_checks_see_console_errors_and_requests(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/a.png">'
                   '<script>console.error("boom")</script></body></html>')
    console, requests, _ = _open(bad, tmp_path)
    assert any("boom" in line for line in console)
    assert "http://example.invalid/a.png" in requests


def test_report_renders_offline_without_console_errors(toy_run: Path, tmp_path: Path) -> None:
    console, requests, shot = _open(toy_run / "report.html", tmp_path)
    assert console == [] and requests == []
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000  # a drawn page, not a blank one
