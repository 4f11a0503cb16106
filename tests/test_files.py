"""files.py: a write is all or nothing and synced; the lock excludes other processes; local path or hub id."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from colbert_az_pylate import files
from colbert_az_pylate.files import (
    atomic_path,
    atomic_write,
    exclusive_lock,
    looks_like_local_path,
    replace_folder,
    replace_synced,
)

ROOT = Path(__file__).resolve().parent.parent


def test_an_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text("old")
    atomic_write(target, '{"şəhər": "Bakı"}')
    atomic_write(tmp_path / "bytes.bin", b"\x00\x01")
    assert target.read_text(encoding="utf-8") == '{"şəhər": "Bakı"}'
    assert (tmp_path / "bytes.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bytes.bin", "manifest.json"]


def test_a_failure_mid_write_leaves_the_old_file_intact_and_no_temporary_file(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as staged:
        staged.write_text("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_a_failed_rename_leaves_the_old_file_intact_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    target.write_text("old")

    def refused(source, destination):
        raise PermissionError(13, "Permission denied", str(destination))

    monkeypatch.setattr(files.os, "replace", refused)
    with pytest.raises(PermissionError):
        atomic_write(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_an_atomic_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(files.os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    atomic_write(tmp_path / "a.json", "{}")
    expected = ["fsync", "replace", "fsync"] if os.name != "nt" else ["fsync", "replace"]
    assert events == expected


def test_a_given_temporary_name_is_used_so_cleaners_can_recognise_it(tmp_path):
    seen = []
    with atomic_path(tmp_path / "ids.3.json", temporary=tmp_path / "ids.3.json.tmp", sync_folder=False) as staged:
        staged.write_text("[]")
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
    assert seen == [["ids.3.json.tmp"]] and [p.name for p in tmp_path.iterdir()] == ["ids.3.json"]


def test_replace_synced_moves_a_finished_file_or_folder(tmp_path):
    (tmp_path / "staged.txt").write_text("new")
    (tmp_path / "staged").mkdir()
    (tmp_path / "staged" / "weights.bin").write_bytes(b"1")
    replace_synced(tmp_path / "staged.txt", tmp_path / "final.txt")
    replace_synced(tmp_path / "staged", tmp_path / "final")
    assert (tmp_path / "final.txt").read_text() == "new" and (tmp_path / "final" / "weights.bin").read_bytes() == b"1"


def test_replace_folder_puts_the_old_output_back_when_the_swap_fails(tmp_path):
    output = tmp_path / "model"
    output.mkdir()
    (output / "config.json").write_text("old")
    with pytest.raises(FileNotFoundError):
        replace_folder(tmp_path / "missing-staging", output, tmp_path / ".model.retired")
    assert (output / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _try_lock(path: Path, wait: bool) -> subprocess.Popen:
    code = textwrap.dedent(
        f"""
        import sys
        from colbert_az_pylate.files import exclusive_lock
        try:
            with exclusive_lock({str(path)!r}, wait={wait}):
                print("locked", flush=True)
        except BlockingIOError:
            print("held", flush=True)
            sys.exit(1)
        """
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_the_lock_excludes_a_second_holder_in_another_process(tmp_path):
    path = tmp_path / ".lock"
    with exclusive_lock(path):
        refused = _try_lock(path, wait=False)
        assert refused.communicate(timeout=60)[0].strip() == "held" and refused.returncode == 1
        waiting = _try_lock(path, wait=True)
        time.sleep(1.0)
        assert waiting.poll() is None  # still waiting for us
    assert waiting.communicate(timeout=60)[0].strip() == "locked" and waiting.returncode == 0
    taken = _try_lock(path, wait=False)
    assert taken.communicate(timeout=60)[0].strip() == "locked"


def test_the_windows_lock_locks_the_first_byte_and_retries_while_held(tmp_path, monkeypatch):
    calls = []

    class FakeMsvcrt:
        LK_NBLCK, LK_UNLCK = 2, 0

        @staticmethod
        def locking(fd, mode, nbytes):
            calls.append((mode, nbytes))
            if mode == FakeMsvcrt.LK_NBLCK and len(calls) == 1:
                raise PermissionError(13, "held by another process")

    monkeypatch.setattr(files, "fcntl", None)
    monkeypatch.setattr(files, "msvcrt", FakeMsvcrt)
    with exclusive_lock(tmp_path / ".lock"):
        pass
    assert calls == [(2, 1), (2, 1), (0, 1)]
    calls.clear()
    with pytest.raises(BlockingIOError), exclusive_lock(tmp_path / ".lock", wait=False):
        pass


@pytest.mark.parametrize(
    ("location", "local"),
    [
        ("LocalDoc/colbert-az", False),
        ("colbert-az", False),
        ("./colbert-az", True),
        ("/models/colbert-az", True),
        ("~/colbert-az", True),
        ("models/LocalDoc/colbert-az", True),
        ("colbert-az/", True),
        ("C:\\models\\colbert-az", True),
        (Path("colbert-az"), True),
    ],
)
def test_a_location_that_cannot_be_a_hub_id_is_a_local_path(location, local):
    assert looks_like_local_path(location) is local
