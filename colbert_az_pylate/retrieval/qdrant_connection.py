"""Reaching Qdrant for :class:`~colbert_az_pylate.retrieval.qdrant_index.QdrantIndex`: the embedded client of a
folder (one per folder and process), a server's client, and requests retried with every failure as one line.

``qdrant-client`` is an optional extra: :func:`import_qdrant` imports it only when an index is opened.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from colbert_az_pylate.errors import (
    ColbertAzError,
    IndexFormatError,
    IndexLockedError,
    InvalidArgumentError,
    OutputExistsError,
    first_line,
)
from colbert_az_pylate.retrieval.qdrant_guard import guarded

__all__ = [
    "RETRY_STATUSES",
    "call_with_retries",
    "check_folder",
    "connect_server",
    "import_qdrant",
    "open_local",
    "release_local",
]

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

# One embedded client per folder and process: qdrant-client locks the folder per client, and pylate's own usage
# opens a new index over the old object before dropping it.
_LOCAL: dict[str, list] = {}
_LOCAL_MUTEX = threading.Lock()


def import_qdrant() -> tuple[ModuleType, ModuleType]:
    """``(qdrant_client, qdrant_client.models)``, or one line saying how to install the extra."""
    try:
        import qdrant_client  # optional extra: imported only when a Qdrant index is opened
        from qdrant_client import models
    except ImportError as exc:
        raise ColbertAzError(
            'the Qdrant backend needs qdrant-client; install it with: pip install "colbert-az-pylate[qdrant]"'
        ) from exc
    return qdrant_client, models


def open_local(path: Path):
    """The process's embedded client of ``path`` (opened on first use) and the key to :func:`release_local` it."""
    qdrant_client, _ = import_qdrant()
    key = os.path.realpath(path)
    with _LOCAL_MUTEX:
        entry = _LOCAL.get(key)
        if entry is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with guarded(path):
                        client = qdrant_client.QdrantClient(path=str(path))
            except RuntimeError as exc:
                if "already accessed" in str(exc):
                    raise IndexLockedError(
                        f"another process has the Qdrant index at {path} open (embedded Qdrant allows one process "
                        "per folder); close it, or run a Qdrant server for concurrent access"
                    ) from exc
                raise
            except (ValueError, OSError) as exc:
                raise IndexFormatError(f"cannot open the embedded Qdrant index at {path}: {first_line(exc)}") from exc
            entry = _LOCAL[key] = [client, 0]
        entry[1] += 1
        return entry[0], key


def release_local(key: str) -> None:
    """One user fewer of an embedded client; the last one closes it (and frees the folder)."""
    with _LOCAL_MUTEX:
        entry = _LOCAL.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _LOCAL[key]
            with contextlib.suppress(Exception):
                entry[0].close()


def connect_server(url: str, api_key: str | None, timeout: int, prefer_grpc: bool):
    """A client of the Qdrant server at ``url`` (nothing is sent yet); a malformed url is one line."""
    qdrant_client, _ = import_qdrant()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Api key is used with an insecure connection" on http://
            return qdrant_client.QdrantClient(
                url=url, api_key=api_key, timeout=timeout, prefer_grpc=prefer_grpc, check_compatibility=False
            )
    except ValueError as exc:
        raise InvalidArgumentError(f"cannot use the Qdrant url {url!r}: {first_line(exc)}") from exc


def check_folder(path: Path) -> None:
    """Refuse a file, another backend's index, or a non-empty folder that is not an embedded Qdrant storage."""
    for ancestor in (path, *path.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputExistsError(f"{ancestor} is a file, not a folder; name a folder for the index")
            break
    if not path.exists():
        return
    names = {p.name for p in path.iterdir()} - {".lock"}
    if not names or {"meta.json", "collection"} & names:
        return
    if {"manifest.json", "plaid-manifest.json"} & names:
        raise OutputExistsError(
            f"{path} holds a Voyager or PLAID index, not a Qdrant one; choose another folder for a Qdrant index"
        )
    raise OutputExistsError(
        f"{path} is not empty and is not a Qdrant index: it holds {sorted(names)[:3]}; choose a new or empty folder"
    )


def call_with_retries(
    what: str, request: Callable[[], object], *, retries: int, url: str | None, folder: Path | None, where: str
):
    """Run ``request`` (one call to Qdrant), retried on server errors and lost connections; every failure is one
    line (``where`` names the index in it). An embedded client's request (``folder`` given) runs under the
    unpickling guard."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse  # optional extra

    server = f"the Qdrant server at {url}"
    for attempt in range(retries):
        last = attempt == retries - 1
        try:
            if folder is None:
                return request()
            with guarded(folder):  # creating a collection loads any storage already in its folder
                return request()
        except UnexpectedResponse as exc:
            status = exc.status_code
            if status in (401, 403):
                raise ColbertAzError(
                    f"{server} refused the API key ({status} {exc.reason_phrase}) while {what}: pass the right "
                    "key (api_key=..., --api-key or $QDRANT_API_KEY)"
                ) from exc
            if status not in RETRY_STATUSES or last:
                tries = f" after {retries} tries" if status in RETRY_STATUSES else ""
                raise ColbertAzError(f"{server} failed {what}{tries}: {status} {_server_detail(exc)}") from exc
        except ResponseHandlingException as exc:
            if last:
                raise ColbertAzError(
                    f"cannot reach {server} ({first_line(exc)}) while {what}, after {retries} tries; "
                    "start the server or check the url"
                ) from exc
        except ValueError as exc:  # the embedded client validates like the server
            raise InvalidArgumentError(f"{where} refused {what}: {first_line(exc)}") from exc
        except Exception as exc:
            grpc_error = _grpc_failure(exc, server, what)
            if grpc_error is None:
                raise
            retry, message = grpc_error
            if not retry or last:
                raise ColbertAzError(message) from exc
        time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _server_detail(exc) -> str:
    """The server's own error text from a Qdrant HTTP error (``{"status": {"error": ...}}``), else its reason."""
    with contextlib.suppress(Exception):
        status = exc.structured().get("status")
        if isinstance(status, dict) and status.get("error"):
            return first_line(Exception(status["error"]))
    return exc.reason_phrase or "error"


def _grpc_failure(exc: BaseException, server: str, what: str) -> tuple[bool, str] | None:
    """(retry?, message) for a gRPC error, or ``None`` for anything else."""
    code = getattr(exc, "code", None)
    if not callable(code):
        return None
    try:
        name = getattr(code(), "name", "")
    except Exception:
        return None
    if name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return False, f"{server} refused the API key ({name}) while {what}: pass the right key"
    if name == "UNAVAILABLE":
        return True, f"cannot reach {server} (gRPC {name}) while {what}; start the server or check the url"
    if name in ("RESOURCE_EXHAUSTED", "INTERNAL", "DEADLINE_EXCEEDED", "ABORTED"):
        return True, f"{server} failed {what}: gRPC {name}"
    details = getattr(exc, "details", None)
    return False, f"{server} failed {what}: gRPC {name} {details() if callable(details) else ''}".strip()
