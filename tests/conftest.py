"""Shared fixtures: tiny checkpoints of every tokenizer family, converted once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

from tiny_checkpoints import FAMILIES, build_checkpoint

ROOT = Path(__file__).resolve().parent.parent
AZ_MIRAGE = ROOT.parent / "shared" / "data" / "az-mirage" / "dataset.json"


@pytest.fixture(scope="session")
def az_mirage() -> Path | None:
    """The real AZ-MIRAGE questions when ../shared is beside the checkout (as in CI), else None."""
    return AZ_MIRAGE if AZ_MIRAGE.is_file() else None


@pytest.fixture(scope="session")
def probes(az_mirage):
    """The package's own probe texts, plus 24 real AZ-MIRAGE texts when they are beside the checkout."""
    from colbert_az_pylate.conversion.probes import probe_texts

    return probe_texts(az_mirage, real_limit=24) if az_mirage else probe_texts()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    sizes = {"gemma": 128, "wordpiece": 16}  # the real projection size, and other sizes
    return {family: build_checkpoint(root / family, family, embedding_dim=sizes.get(family, 24)) for family in FAMILIES}


@pytest.fixture(scope="session")
def converted(checkpoints, probes, tmp_path_factory):
    """family -> (output folder, ConversionReport), each converted and verified once."""
    from colbert_az_pylate import convert

    root = tmp_path_factory.mktemp("converted")
    return {
        family: (root / family, convert(source, root / family, probes=probes)) for family, source in checkpoints.items()
    }
