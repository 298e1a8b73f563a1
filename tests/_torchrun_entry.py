"""A torchrun entry point for tests: runs ``python -m cxrgan`` with the given arguments after installing an audit
hook that records every path this process opens for writing, creates, renames or deletes.

Environment:
    CXRGAN_TEST_WRITES: folder that receives ``rank<R>.json``, the list of paths written by rank R.
    CXRGAN_TEST_HIDE_ON_RANK: ``R:PATH`` -- on rank R the argument PATH is replaced by a path that does not exist
        (a data file missing on one machine).
    CXRGAN_TEST_NAN_ON_RANK: ``R`` -- on rank R the adversarial "bce" loss of the discriminator is NaN (a numerical
        failure on one process only).
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys

WRITE_EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.link", "os.symlink", "os.truncate",
                "shutil.copyfile", "shutil.rmtree"}
written: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and args:
        path, mode, flags = args[0], args[1], args[2] if len(args) > 2 else 0
        writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            written.append(os.path.abspath(os.fsdecode(path)))
    elif event in WRITE_EVENTS:
        written.extend(os.path.abspath(os.fsdecode(a)) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike)))


def _save() -> None:
    folder = os.environ.get("CXRGAN_TEST_WRITES")
    if folder:
        with open(os.path.join(folder, f"rank{os.environ.get('RANK', '0')}.json"), "w") as f:
            json.dump(sorted(set(written)), f)


if __name__ == "__main__":
    hide = os.environ.get("CXRGAN_TEST_HIDE_ON_RANK", "")
    if hide:
        rank, _, path = hide.partition(":")
        if os.environ.get("RANK") == rank:
            sys.argv = [a if a != path else path + ".missing-on-this-machine" for a in sys.argv]
    if os.environ.get("CXRGAN_TEST_NAN_ON_RANK") == os.environ.get("RANK"):
        from cxrgan.generators.losses import LOSSES, AdversarialLoss

        bce = LOSSES["bce"]
        LOSSES["bce"] = AdversarialLoss(lambda real, fake: bce.d_loss(real, fake) * float("nan"), bce.g_loss)
    atexit.register(_save)
    sys.addaudithook(_audit)
    sys.argv = ["cxrgan", *sys.argv[1:]]
    runpy.run_module("cxrgan", run_name="__main__", alter_sys=True)
