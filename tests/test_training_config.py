"""``colbert-az train --config``: the YAML keys are checked, and a run from a raw layout saves a converted folder."""

from __future__ import annotations

import json

import pytest
import yaml
from test_training_sources import BOOKS, write_books_folder

from colbert_az_pylate import load
from colbert_az_pylate.cli import main
from colbert_az_pylate.errors import ColbertAzError
from colbert_az_pylate.training.config import parse_train_config

BASE = {"model": "m", "output": "o", "rows": 10, "sources": [{"preset": BOOKS, "weight": 1}]}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({**BASE, "learning_rate": 1}, "unknown key 'learning_rate' in the config; known keys: model, output, rows"),
        ({**BASE, "recipe": {"lr": 1}}, "unknown key 'lr' in recipe; known keys: learning_rate"),
        ({**BASE, "trainer": {"max_stepz": 1}}, "unknown key 'max_stepz' in trainer"),
        ({**BASE, "sources": [{"preset": BOOKS, "weight": 1, "path": "x", "colums": {}}]}, "'colums' in source 1"),
        ({key: value for key, value in BASE.items() if key != "rows"}, "the config needs rows"),
        ({**BASE, "sources": [{"preset": BOOKS}]}, "source 1 needs a weight"),
    ],
)
def test_config_errors_name_the_key_and_the_known_keys(values, message):
    with pytest.raises(ColbertAzError, match=message):
        parse_train_config(values)


def test_a_source_schema_with_an_unknown_column_key_is_refused():
    config = parse_train_config({**BASE, "sources": [{"schema": {"corpus_idd": "pid"}, "repo": "x", "weight": 1}]})
    with pytest.raises(ColbertAzError, match="unknown key 'corpus_idd' in a source's schema; known keys: corpus_id"):
        config.sources[0].resolved_schema()


def test_the_cli_refuses_an_unknown_key_with_one_line_and_exit_code_2(tmp_path, capsys):
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({**BASE, "epochs": 3}), encoding="utf-8")
    assert main(["train", "--config", str(config)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: unknown key 'epochs' in the config; known keys:")


def test_train_from_a_raw_layout_saves_a_converted_folder_and_reports_held_out_metrics(
    checkpoints, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("COLBERT_AZ_CACHE", str(tmp_path / "cache"))
    data = write_books_folder(tmp_path / "books", queries=12, passages=30)
    config = {
        "model": str(checkpoints["wordpiece"]),
        "output": str(tmp_path / "out"),
        "rows": 50,
        "heldout_per_source": 3,
        "device": "cpu",
        "sources": [{"preset": BOOKS, "path": str(data), "name": "books", "weight": 1.0}],
        "recipe": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "negatives": 4, "bf16": False},
        "trainer": {"max_steps": 2, "save_strategy": "no", "use_cpu": True, "eval_steps": 2},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["train", "--config", str(tmp_path / "recipe.yaml"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["data"][0] == "9 training rows, 3 held-out triplets"
    assert set(report["heldout"]) == {"books", "macro"} and set(report["heldout"]["macro"]) >= {"R@1", "NDCG@10"}
    assert (tmp_path / "out" / "projection.pt").is_file() and (tmp_path / "out" / "modules.json").is_file()
    assert load(tmp_path / "out", device="cpu").encode(["Bakı"], is_query=True)[0].shape[0] == 32


def test_the_example_recipe_parses_with_the_card_defaults():
    from pathlib import Path

    from colbert_az_pylate.training.config import load_train_config

    config = load_train_config(Path(__file__).parents[1] / "examples" / "recipe.yaml")
    assert [source.weight for source in config.sources] == [50, 25, 15, 10]
    assert config.recipe.learning_rate == 1e-6 and config.sources[3].resolved_schema().pairs_config == "triplets"
