"""Two processes (torchrun, gloo on the CPU) train a few steps and save a converted folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from colbert_az_pylate import load


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_with_ddp_on_the_cpu_and_save_a_converted_folder(converted, tmp_path):
    script = Path(__file__).with_name("ddp_train_script.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), str(script), str(converted["wordpiece"][0]), str(tmp_path / "out")]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0 of 2 finished" in result.stdout and "rank 1 of 2 finished" in result.stdout
    model = load(tmp_path / "out", device="cpu")
    start = load(converted["wordpiece"][0], device="cpu")
    assert not torch.equal(model[1].linear.weight, start[1].linear.weight)
