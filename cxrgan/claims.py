"""Exclusive claims on shared work (a cell of a grid, a generator cache entry) between processes, possibly on several
machines sharing one file system: a claim is a small file holding its owner's host and process id, created with
``link`` so that exactly one process gets it; a claim left by a dead process of this host is taken over."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from cxrgan.io import create_exclusive, process_exists


def owner_id() -> str:
    """``host pid`` of this process, as written into its claims."""
    return f"{socket.gethostname()} {os.getpid()}"


def try_claim(path: str | os.PathLike) -> str | None:
    """Claim ``path`` for this process. Returns None when the claim is (now) ours, else its live owner's ``host pid``.

    A claim whose owner is a process of this host that no longer exists (killed) is taken over; whether a process
    on another host is alive cannot be known from here, so its claim stands until that process releases it or a
    user removes the file.
    """
    path = Path(path)
    for _ in range(3):  # a stale claim is moved aside, then created again; another process may win that race
        if create_exclusive(path, owner_id() + "\n"):
            return None
        owner = _read_owner(path)
        if owner is None:  # released between our attempt and the read
            continue
        if owner == owner_id():
            return None
        host, _, pid = owner.partition(" ")
        if host != socket.gethostname() or not pid.isdigit() or process_exists(int(pid)):
            return owner
        stale = path.with_name(f"{path.name}.stale.{os.getpid()}")
        try:
            os.rename(path, stale)  # only one process can move the stale file; the others see it gone
        except FileNotFoundError:
            continue
        stale.unlink(missing_ok=True)
    return _read_owner(path) or "another process (the claim kept changing hands)"


def release(path: str | os.PathLike) -> None:
    """Remove ``path`` if this process holds it."""
    path = Path(path)
    if _read_owner(path) == owner_id():
        path.unlink(missing_ok=True)


def _read_owner(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
