"""Temporary folders that a killed process cannot leave behind for good.

Each temporary folder of ours carries the id of the process that made it (``.{name}.tmp-{pid}-{random}``). A
process killed with ``SIGKILL`` cannot clean up, so every later run removes the folders of this pattern whose
process is gone. A retired output (``.{name}.old-{pid}-…``, the previous output while a new one is moved into
place) is put back when the output itself is missing, so a kill between the two renames loses nothing.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from colbert_az_pylate.files import replace_synced

STAGING_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[A-Za-z0-9_]+$")
VERIFY_PREFIX = "colbert-az-verify-"
VERIFY_PATTERN = re.compile(rf"^{re.escape(VERIFY_PREFIX)}(?P<pid>\d+)-[A-Za-z0-9_]+$")


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` exists on this machine (a zombie counts as gone).

    Parameters
    ----------
    pid : int
        A process id.

    Returns
    -------
    bool
        True while the process runs; this process is always alive.

    Examples
    --------
    >>> pid_alive(os.getpid())
    True
    """
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def staging_folder(output: Path) -> Path:
    """A new, empty temporary folder beside ``output`` that carries this process's id.

    Parameters
    ----------
    output : Path
        The (absolute) folder that will be written.

    Returns
    -------
    Path
        ``output.parent / ".{output.name}.tmp-{pid}-{random}"``.

    Examples
    --------
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     staged = staging_folder(Path(tmp) / "model")
    ...     STAGING_PATTERN.match(staged.name)["pid"] == str(os.getpid())
    True
    """
    while True:  # not mkdtemp: its 0700 would become the output's mode; mkdir gives the umask's, as a user expects
        staged = output.parent / f".{output.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            staged.mkdir()
            return staged
        except FileExistsError:
            continue
        except OSError as exc:  # name the folder the user gave (read-only, …), not our temporary one
            raise OSError(exc.errno, exc.strerror, str(output.parent)) from exc


def retired_name(output: Path) -> Path:
    """Where the previous ``output`` waits while its replacement is moved into place."""
    return output.with_name(f".{output.name}.old-{os.getpid()}-{secrets.token_hex(4)}")


def remove_stale_staging(parent: Path) -> list[str]:
    """Clean up after killed conversions in ``parent``: remove their temporary folders, restore retired outputs.

    Only folders matching :data:`STAGING_PATTERN` whose process is gone are touched.

    Parameters
    ----------
    parent : Path
        The folder that holds outputs.

    Returns
    -------
    list[str]
        What was done, one line per folder.

    Examples
    --------
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (Path(tmp) / ".model.tmp-999999999-abc").mkdir()
    ...     remove_stale_staging(Path(tmp)), list(Path(tmp).iterdir())
    (['removed .model.tmp-999999999-abc (left by process 999999999, which is gone)'], [])
    """
    done: list[str] = []
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return done
    for entry in entries:
        match = STAGING_PATTERN.match(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink() or pid_alive(int(match["pid"])):
            continue
        output = entry.with_name(match["name"])
        if match["kind"] == "old" and not output.exists():
            try:
                replace_synced(entry, output)
            except OSError:
                continue
            done.append(f"restored {output.name} from {entry.name} (process {match['pid']} was killed mid-replace)")
            continue
        shutil.rmtree(entry, ignore_errors=True)
        done.append(f"removed {entry.name} (left by process {match['pid']}, which is gone)")
    return done


def remove_stale_verify_folders(parent: Path | None = None) -> list[str]:
    """Remove the verification folders (``colbert-az-verify-{pid}-…``) of processes that are gone.

    Parameters
    ----------
    parent : Path, optional
        Where they are made; the system's temporary folder by default.

    Returns
    -------
    list[str]
        The names removed.

    Examples
    --------
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (Path(tmp) / "colbert-az-verify-999999999-x1").mkdir()
    ...     remove_stale_verify_folders(Path(tmp))
    ['colbert-az-verify-999999999-x1']
    """
    parent = Path(parent or tempfile.gettempdir())
    removed = []
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = VERIFY_PATTERN.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not pid_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed
