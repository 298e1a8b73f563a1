"""cxrgan/provenance.py: the commit a run records is its own checkout's, never that of a repository an installed
copy happens to sit in."""

from __future__ import annotations

import re
import subprocess

from cxrgan.provenance import git_commit


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_git_commit_is_the_packages_own_checkout(tmp_path):
    (tmp_path / "cxrgan").mkdir()
    (tmp_path / "cxrgan" / "__init__.py").write_text("x = 1\n")
    installed = tmp_path / "venv" / "site-packages" / "cxrgan"
    installed.mkdir(parents=True)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "cxrgan")
    _git(tmp_path, "commit", "-qm", "one")
    assert re.fullmatch(r"[0-9a-f]{12}", git_commit(tmp_path / "cxrgan"))
    (tmp_path / "cxrgan" / "__init__.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "cxrgan").endswith("+dirty")
    assert git_commit(installed) is None  # inside the repository, but not its package folder
    assert git_commit(tmp_path.parent / "nowhere" / "cxrgan") is None
