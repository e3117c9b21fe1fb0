"""Headless Chromium for the tests that render a page: found, or installed from Debian's
``chromium`` package (as root, like CI), and run with the network unreachable (loaded by
conftest.py; the ``chromium`` fixture there)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Every host name fails to resolve and every proxied request goes to a closed port, so a
#: page that needs anything beyond its own files shows it (file:// is not affected).
OFFLINE = (
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def install_chromium(timeout: float = 900) -> str:
    """Debian's ``chromium`` (apt-get update, then install; waits for a held dpkg lock).
    Raises RuntimeError saying why when it cannot."""
    if shutil.which("apt-get") is None:
        raise RuntimeError("no chromium on PATH and no apt-get to install it")
    if os.geteuid() != 0:
        raise RuntimeError("no chromium on PATH; installing it needs root (apt-get install)")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    for command in (
        ["apt-get", *lock, "update"],
        ["apt-get", *lock, "install", "-y", "chromium"],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    path = find_chromium()
    if path is None:
        raise RuntimeError("apt-get installed chromium but no chromium is on PATH")
    return path


def ensure_chromium() -> str:
    return find_chromium() or install_chromium()


def dump_dom(chromium: str, page: Path, budget_ms: int = 20_000, timeout: float = 180) -> str:
    """The DOM of ``page`` after its scripts ran (``budget_ms`` of virtual time), offline."""
    command = [
        chromium,
        "--headless",
        "--no-sandbox",  # root in a container has no usable sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        *OFFLINE,
        f"--virtual-time-budget={budget_ms}",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0 or "<html" not in result.stdout:
        raise RuntimeError(f"{chromium} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


@dataclass
class Chart:
    """One vega chart of a page's DOM: its state and the data marks it drew."""

    state: str
    marks: Counter = field(default_factory=Counter)  # mark kind -> shapes with geometry
    texts: list[str] = field(default_factory=list)  # axis titles, labels, legends


class _Charts(HTMLParser):
    """``<div data-psr-chart=...>`` elements (pipeline/plotspage.py) and, inside each, the
    shapes vega's SVG renderer drew under ``<g class="mark-<kind> role-mark">``."""

    def __init__(self):
        super().__init__()
        self.charts: dict[str, Chart] = {}
        self.stack: list[tuple[str, str | None]] = []  # (tag, mark kind it opens)
        self.current: str | None = None
        self.depth = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "div" and "data-psr-chart" in attrs and self.current is None:
            self.current, self.depth = attrs.get("id", "?"), len(self.stack)
            self.charts[self.current] = Chart(attrs["data-psr-chart"])
        kind = next((c[5:] for c in classes if c.startswith("mark-")), None)
        kind = kind if "role-mark" in classes else None
        if self.current is not None and tag in ("path", "line", "rect", "circle", "text"):
            inside = next((k for _, k in reversed(self.stack) if k), None)
            if inside and (tag != "path" or attrs.get("d")):
                self.charts[self.current].marks[inside] += 1
        if tag not in VOID:
            self.stack.append((tag, kind))

    def handle_endtag(self, tag):
        while self.stack:
            popped, _ = self.stack.pop()
            if popped == tag:
                break
        if self.current is not None and len(self.stack) <= self.depth:
            self.current = None

    def handle_data(self, data):
        in_script = self.stack and self.stack[-1][0] in ("script", "style")
        if self.current is not None and data.strip() and not in_script:
            self.charts[self.current].texts.append(data.strip())


class _Resources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def resources(html: str) -> list[str]:
    """Every ``src`` and ``href`` of the page's elements (not the text of its scripts)."""
    parser = _Resources()
    parser.feed(html)
    return parser.urls


VOID = {"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


def vega_charts(dom: str) -> dict[str, Chart]:
    """Chart div id -> what it drew."""
    parser = _Charts()
    parser.feed(dom)
    return parser.charts
