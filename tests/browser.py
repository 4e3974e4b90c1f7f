"""A real headless browser (Debian's chromium, which ``make test`` installs when root)
opening a local HTML file offline: what it rendered, which images it decoded, and what it
tried to fetch."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

# Appended to a copy of the page: once everything has loaded, the page writes what the
# browser made of it into an attribute that --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const loaded = images.filter(image => image.complete && image.naturalWidth > 0);
  document.body.setAttribute("data-probe", JSON.stringify({
    images: images.length, loaded: loaded.length,
    widths: loaded.map(image => image.naturalWidth),
    fetched: performance.getEntriesByType("resource").map(entry => entry.name),
    headings: Array.from(document.querySelectorAll("h2")).map(h => h.textContent),
    height: document.body.scrollHeight}));
});
</script>"""


def chromium() -> str:
    """The browser's path; skips the test where there is none (not root, no apt)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (make test installs it when run as root)")
    return found


def open_offline(page: Path, work: Path) -> dict[str, Any]:
    """Load ``page`` (a copy with :data:`PROBE`, beside nothing else) in headless chromium
    with every host name unresolvable; returns the probe's findings."""
    work.mkdir(parents=True, exist_ok=True)
    probed = work / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                      encoding="utf-8")
    done = subprocess.run(
        [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
         "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={work / 'profile'}",
         "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'data-probe="([^"]*)"', done.stdout)
    assert found, f"the page never finished loading: {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))
