"""Which code, libraries and machine made a run: one record per invocation (a start, each --resume, each shard) in
the run directory's ``invocations.jsonl``, so a table can name the commit and CPU behind it without anyone
remembering them."""

from __future__ import annotations

import datetime
import platform
import subprocess
from pathlib import Path

import torch

import cxrgan

INVOCATIONS = "invocations.jsonl"
PACKAGE_DIR = Path(cxrgan.__file__).resolve().parent


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (the processor or machine type where it does not)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(where: Path = PACKAGE_DIR) -> str | None:
    """The commit of the git checkout whose top folder holds the package ``where`` (12 hex digits, "+dirty" when
    tracked files differ from it); None for an installed copy (even one inside some other repository) or without git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != where.parent:
            return None
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def invocation(command: str | None) -> dict:
    """The record of one invocation: when, the command, cxrgan's version and commit, torch, Python and the CPU."""
    return {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": command or "", "cxrgan": cxrgan.__version__, "commit": git_commit(),
            "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_model()}
