"""One thread policy for the search path, set by the library so that no user has to.

A search encodes its query (torch's OpenMP pool, or ONNX Runtime's / OpenVINO's), walks the graph (voyager's own
threads) and scores exactly (torch's pool again). By default OpenMP threads *spin* for a while after every parallel
region, and ONNX Runtime's do the same: on a 2-core machine they take the cores from voyager's threads, from the
next step and from every other process. The policy:

- OpenMP threads sleep as soon as their work is done (``OMP_WAIT_POLICY=PASSIVE``), set when this package is
  imported before torch. OpenMP reads the variable once, when torch loads it, so it cannot be changed later; a
  process that imported torch first keeps torch's spinning threads, and :func:`thread_policy` says so.
- ONNX Runtime's threads do not spin (``session.intra_op.allow_spinning = 0``); OpenVINO's do not by default.
- Every matrix product of the search path (exact MaxSim, reranking) runs on torch's pool: no second BLAS pool
  (numpy's OpenBLAS) wakes up beside it.
- voyager searches with one thread per core (``num_threads=-1``), while the encoder's threads sleep.

Override: set ``OMP_WAIT_POLICY`` yourself before importing anything (``ACTIVE`` brings back the spinning), pass
``threads=`` to :func:`colbert_az_pylate.load` for the exported encoders, ``num_threads=`` to the index, or call
``torch.set_num_threads``.

>>> thread_policy()["openmp_wait_policy"] in ("PASSIVE", "ACTIVE", "set by the user: PASSIVE")
True
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "OMP_WAIT_POLICY"
_SET_BY_US = "PASSIVE" if WAIT_POLICY not in os.environ and "torch" not in sys.modules else None


def prefer_sleeping_threads() -> None:
    """Ask OpenMP for threads that sleep when idle, when torch is not loaded yet and the user set nothing."""
    if _SET_BY_US is not None:
        os.environ.setdefault(WAIT_POLICY, _SET_BY_US)


def thread_policy() -> dict:
    """What the policy could set in this process (for ``/health``, ``--json`` output and bug reports).

    Returns
    -------
    dict
        ``openmp_wait_policy``: ``"PASSIVE"`` (set by this package), ``"set by the user: ..."``, or ``"ACTIVE"``
        (torch was imported before this package: its threads spin); ``torch_threads`` when torch is loaded.
    """
    value = os.environ.get(WAIT_POLICY)
    if _SET_BY_US is not None and value == _SET_BY_US:
        policy = "PASSIVE"
    elif value is not None and _SET_BY_US is None:
        policy = f"set by the user: {value}"
    else:
        policy = "ACTIVE"
    answer = {"openmp_wait_policy": policy}
    if "torch" in sys.modules:
        answer["torch_threads"] = sys.modules["torch"].get_num_threads()
    return answer
