"""Run by tests/test_training_ddp.py under ``torchrun --nproc_per_node 2``: a few DDP steps on the CPU (gloo)."""

from __future__ import annotations

import sys

import torch.distributed as dist
from tiny_checkpoints import CORPUS

from colbert_az_pylate import load
from colbert_az_pylate.training.trainer import Recipe, train

if __name__ == "__main__":
    model_folder, output = sys.argv[1], sys.argv[2]
    rows = [
        {"query": CORPUS[i][:30], "documents": [CORPUS[i], CORPUS[(i + 1) % len(CORPUS)]], "scores": [5.0, 1.0]}
        for i in range(len(CORPUS))
    ]
    recipe = Recipe(per_device_train_batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-3, bf16=False)
    train(load(model_folder, device="cpu"), rows, output, recipe=recipe, max_steps=3, save_strategy="no",
          use_cpu=True, ddp_backend="gloo", logging_steps=1)  # fmt: skip
    print(f"rank {dist.get_rank()} of {dist.get_world_size()} finished", flush=True)
