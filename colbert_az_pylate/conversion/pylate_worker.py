"""Encode probe texts with plain pylate, in a process of its own, as a user would.

Run as a script (``python pylate_worker.py MODEL PROBES_JSON OUTPUT_NPZ [PARENT_PID]``): it imports pylate, torch
and numpy only — never colbert_az_pylate — so what it measures is what plain pylate does with the folder.
The output holds, per text, the ids pylate fed the backbone and the vectors it returned, plus MaxSim
scores computed by pylate's own ``colbert_scores``.

The worker dies with its parent: on Linux the kernel kills it when the parent goes (``PR_SET_PDEATHSIG``), and
everywhere a watcher thread ends it once its parent process is gone, so a killed ``convert`` leaves no orphan.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
PARENT_POLL_SECONDS = 0.5


def die_with_parent(parent_pid: int) -> None:
    """End this process as soon as ``parent_pid`` is no longer its parent (the parent died)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watcher below still ends the worker
    if os.getppid() != parent_pid:  # the parent died before the kernel was told
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watcher", daemon=True).start()


def main(model_path: str, probes_path: str, output_path: str, parent_pid: str | None = None) -> None:
    if parent_pid:
        die_with_parent(int(parent_pid))
    import numpy as np
    import torch
    from pylate import models, scores

    with open(probes_path, encoding="utf-8") as handle:
        texts = json.loads(handle.read())
    model = models.ColBERT(model_path, device="cpu")
    arrays: dict[str, np.ndarray] = {}
    query_vectors = []
    for kind, is_query in (("q", True), ("d", False)):
        out = model.encode(texts, is_query=is_query, output_value=None, show_progress_bar=False, batch_size=16)
        for i in range(len(texts)):
            keep = torch.as_tensor(out["masks"][i]).bool()
            vectors = torch.as_tensor(out["token_embeddings"][i])[keep].float()
            arrays[f"{kind}_ids_{i}"] = torch.as_tensor(out["input_ids"][i])[keep].cpu().numpy()
            arrays[f"{kind}_vectors_{i}"] = vectors.cpu().numpy()
            if is_query:
                query_vectors.append(vectors)
    queries = torch.stack(query_vectors)
    arrays["scores"] = np.stack(
        [
            scores.colbert_scores(queries, torch.from_numpy(arrays[f"d_vectors_{i}"])[None])[:, 0].numpy()
            for i in range(len(texts))
        ],
        axis=1,
    )
    arrays["package_imported"] = np.array("colbert_az_pylate" in sys.modules)
    np.savez(output_path, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:5])
