"""The reports in a real browser: headless Chromium opens report.html / compare.html, every figure must load.

Chromium is required (Debian: ``apt-get update && apt-get install -y chromium``); without it these tests FAIL.
"""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from analysis_fixtures import make_run

from entrolab.analysis.report import analyze_run, compare_runs

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--disable-dev-shm-usage"]

# Appended to a copy of the page: after load, record how many <img> there are and which did not decode.
CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                .map(function (i) { return i.getAttribute("data-file"); });
  var d = document.createElement("pre");
  d.id = "img-check";
  d.textContent = JSON.stringify({total: imgs.length, bad: bad,
                                  files: imgs.map(function (i) { return i.getAttribute("data-file"); }),
                                  widths: imgs.map(function (i) { return i.naturalWidth; })});
  document.body.appendChild(d);
});
</script>"""


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is not installed, and the report tests need a real browser. Install it with "
                "`apt-get update && apt-get install -y chromium` (Debian/Ubuntu package `chromium`).")


def _chromium(tmp_path, *args, timeout=90):
    cmd = [_browser(), *FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stdout


def _images_load(tmp_path, html_path, expected):
    page = html_path.read_text(encoding="utf-8")
    probe = html_path.parent / "_browser_check.html"
    probe.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    dom = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    probe.unlink()
    m = re.search(r'<pre id="img-check">(.*?)</pre>', dom, re.S)
    assert m, "the check script did not run in the browser"
    res = json.loads(m.group(1).replace("&quot;", '"'))
    assert res["total"] == len(expected) and res["bad"] == [], res
    assert sorted(res["files"]) == sorted(expected), res  # every figure the report wrote, and nothing else
    assert all(w > 200 for w in res["widths"])


def _screenshot(tmp_path, html_path, shot):
    _chromium(tmp_path, "--window-size=1200,3000", f"--screenshot={shot}", html_path.as_uri())
    from PIL import Image

    with Image.open(shot) as im:
        im.load()
        assert im.size == (1200, 3000)
        rgb = np.asarray(im.convert("RGB")).astype(int)
    # The figures are drawn: plenty of saturated (non-grey) pixels, as from the blue/orange curves and colour maps.
    saturated = (rgb.max(-1) - rgb.min(-1)) > 60
    assert saturated.mean() > 0.002, "the screenshot shows no coloured plot pixels: did the figures render?"
    return rgb


def test_report_renders_in_chromium(tmp_path):
    rep = analyze_run(make_run(tmp_path / "run"), tmp_path / "out")
    assert "sample_tokens.png" in rep.figures  # the sample response coloured by entropy, as a PNG
    _images_load(tmp_path, rep.html, list(rep.figures))
    _screenshot(tmp_path, rep.html, tmp_path / "report.png")


def test_compare_renders_in_chromium(tmp_path):
    runs = [make_run(tmp_path / n, seed=i, tau=20.0 + 15 * i) for i, n in enumerate(("a", "b"))]
    rep = compare_runs(runs, tmp_path / "cmp")
    _images_load(tmp_path, rep.html, list(rep.figures))
    _screenshot(tmp_path, rep.html, tmp_path / "compare.png")
