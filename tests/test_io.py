"""Atomic writes and JSONL records survive a writer killed at any point."""

from __future__ import annotations

import os

from cxrgan.io import append_jsonl, create_exclusive, read_jsonl, write_text


def test_a_line_cut_short_by_a_kill_is_ignored_then_dropped(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"cell": "a"}\n{"cell": "b", "metr')  # killed inside the second write
    assert read_jsonl(path) == [{"cell": "a"}]
    append_jsonl(path, {"cell": "b"})
    assert read_jsonl(path) == [{"cell": "a"}, {"cell": "b"}]
    assert path.read_text().endswith('"b"}\n')


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "report.html"
    stale = tmp_path / ".report.html.999999999.x1.tmp"  # no process has this id
    live = tmp_path / f".report.html.{os.getpid()}.x2.tmp"  # a writer that is still running
    stale.write_text("half")
    live.write_text("half")
    write_text(target, "whole")
    assert target.read_text() == "whole" and not stale.exists() and live.exists()


def test_run_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    previous = os.umask(0o027)
    try:
        write_text(tmp_path / "report.html", "page")
        assert create_exclusive(tmp_path / "claim", "me")
    finally:
        os.umask(previous)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "claim").stat().st_mode & 0o777 == 0o640
