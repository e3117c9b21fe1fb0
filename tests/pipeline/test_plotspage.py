"""pipeline.plotspage: the DVC plots template with its chart library inlined, and the one
the repository ships (vendor/dvc-plots/page.html). It is rendered in headless Chromium, with
the network unreachable, by tests/pipeline/test_e2e.py."""

from __future__ import annotations

import configparser
import io
import subprocess
import tarfile
from pathlib import Path

import browser  # tests/pipeline/browser.py
import pytest
from dvc_render.html import HTML
from dvc_render.vega import VegaRenderer

from pipeline import plotspage

REPO = Path(__file__).resolve().parents[2]
SOURCES = {lib.name: f"window.{lib.name.replace('-', '_')} = {{}};" for lib in plotspage.LIBRARIES}


def test_dvc_fills_the_page_without_its_cdn_scripts():
    page = plotspage.build_page(SOURCES)
    order = [page.index(f"/* {lib.spec} */") for lib in plotspage.LIBRARIES]
    assert order == sorted(order)  # vega, then vega-lite, then vega-embed (UMD globals)
    assert page.count("{plot_divs}") == 1 and "{scripts}" not in page
    filled = HTML(page).with_scripts(VegaRenderer.SCRIPTS).with_element('<div id="p"></div>')
    html = filled.embed()
    assert '<div id="p"></div>' in html
    assert "cdn.jsdelivr.net" not in html and "{refresh_tag}" not in html
    assert "vega 5.33.1, vega-lite 5.23.0, vega-embed 6.29.0" in html


@pytest.mark.parametrize("bad", ["x = '</SCRIPT>';", "x = '{plot_divs}';", "'{scripts}'"])
def test_a_library_that_would_break_the_page_is_refused(bad):
    with pytest.raises(ValueError, match=r"^vega-lite@5\.23\.0: contains"):
        plotspage.build_page(SOURCES | {"vega-lite": bad})


def test_every_library_is_needed():
    with pytest.raises(ValueError, match="no source for vega-embed"):
        plotspage.build_page({k: v for k, v in SOURCES.items() if k != "vega-embed"})


def _tarball(path: Path, member: str, text: str) -> bytes:
    data = text.encode()
    info = tarfile.TarInfo(f"package/{member}")
    info.size = len(data)
    with tarfile.open(path, "w:gz") as archive:
        archive.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def test_fetch_checks_the_tarball_against_its_integrity(tmp_path, monkeypatch):
    packed = _tarball(tmp_path / "vega-embed-6.29.0.tgz", "build/vega-embed.min.js", "ok();")
    npm = subprocess.CompletedProcess([], 0, stdout="vega-embed-6.29.0.tgz\n")
    monkeypatch.setattr(plotspage.subprocess, "run", lambda *a, **k: npm)
    lib = plotspage.Library("vega-embed", "6.29.0", "build/vega-embed.min.js", "sha512-x")
    with pytest.raises(ValueError, match=r"vega-embed@6\.29\.0: the tarball's integrity is"):
        plotspage.fetch(lib, tmp_path)
    good = plotspage.Library(lib.name, lib.version, lib.file, plotspage.integrity(packed))
    assert plotspage.fetch(good, tmp_path) == "ok();"


def test_the_shipped_page_is_configured_and_self_contained():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    template = (REPO / ".dvc" / config["plots"]["html_template"]).resolve()
    assert template == (REPO / plotspage.PAGE).resolve()
    page = template.read_text()
    for lib in plotspage.LIBRARIES:
        assert f"<script>/* {lib.spec} */\n" in page
    assert page.count("{plot_divs}") == 1 and "{scripts}" not in page
    assert browser.resources(page) == []  # no script, style or image loaded from anywhere
    assert template.stat().st_size < 1_000_000  # the minified builds only
    readme = (template.parent / "README.md").read_text()
    for lib in plotspage.LIBRARIES:
        assert f"| {lib.version} | `{lib.file}`" in readme
