"""Headless Chromium: render a report to a PNG screenshot or to its DOM, offline, to check that it displays."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from cxrgan.errors import CxrganError

# Debian installs "chromium"; other systems name the same browser differently.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Offline and quiet: no GPU, no sandbox (containers run as root), no background network or update traffic.
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
          "--hide-scrollbars", "--mute-audio")


def find_chromium() -> str:
    """Path of a Chromium-family browser (``CXRGAN_CHROMIUM`` overrides the search); an error if there is none."""
    override = os.environ.get("CXRGAN_CHROMIUM")
    if override:
        if not Path(override).exists():
            raise CxrganError(f"CXRGAN_CHROMIUM={override}: no such file")
        return override
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise CxrganError(f"no Chromium browser found on PATH (tried {', '.join(BROWSER_NAMES)}); "
                      "on Debian/Ubuntu: apt-get install -y chromium")


def _run(html_path: Path, extra: list[str], timeout: float) -> subprocess.CompletedProcess:
    html_path = Path(html_path).resolve()
    if not html_path.exists():
        raise CxrganError(f"{html_path}: no such file")
    with tempfile.TemporaryDirectory(prefix="cxrgan-chromium-") as profile:
        command = [find_chromium(), *_FLAGS, f"--user-data-dir={profile}", *extra, html_path.as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CxrganError(f"Chromium did not finish rendering {html_path} within {timeout:g} s") from exc
    if done.returncode != 0:
        raise CxrganError(f"Chromium failed on {html_path} (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    return done


def screenshot(html_path: str | Path, png_path: str | Path, width: int = 1200, height: int = 2000,
               timeout: float = 120.0) -> Path:
    """Render ``html_path`` in headless Chromium and save a ``width`` x ``height`` PNG screenshot."""
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.unlink(missing_ok=True)
    _run(Path(html_path), [f"--screenshot={png_path}", f"--window-size={width},{height}"], timeout)
    if not png_path.exists() or png_path.stat().st_size == 0:
        raise CxrganError(f"Chromium wrote no screenshot to {png_path}")
    return png_path


def dump_dom(html_path: str | Path, timeout: float = 120.0) -> str:
    """The document as Chromium parsed and laid it out (``--dump-dom``)."""
    return _run(Path(html_path), ["--dump-dom"], timeout).stdout
