"""``colbert-az train --config``: the YAML keys are checked, and a run from a raw layout saves a converted folder."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from test_training_sources import BOOKS, write_books_folder

from colbert_az_pylate import load
from colbert_az_pylate.cli import main
from colbert_az_pylate.errors import ColbertAzError, ConfigError
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
    with pytest.raises(ConfigError, match="unknown key 'corpus_idd' in a source's schema; known keys: corpus_id"):
        parse_train_config({**BASE, "sources": [{"schema": {"corpus_idd": "pid"}, "repo": "x/y", "weight": 1}]})


def _source(**changes):
    return {**BASE, "sources": [{"preset": BOOKS, "weight": 1, **changes}]}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({**BASE, "rows": "lots"}, "rows must be a whole number, got 'lots'"),
        ({**BASE, "rows": 0}, "rows must be at least 1"),
        ({**BASE, "rows": True}, "rows must be a whole number, got True"),
        (_source(weight="heavy"), "source 1: weight must be a number, got 'heavy'"),
        (_source(weight=-1), "source 1: weight must be >= 0"),
        ({**BASE, "recipe": {"learning_rate": "fast"}}, "recipe.learning_rate must be a number, got 'fast'"),
        ({**BASE, "recipe": {"alpha": 2}}, "recipe: alpha must be >= 0 and <= 1, got 2"),
        ({**BASE, "recipe": {"per_device_train_batch_size": 2.5}}, "recipe.per_device_train_batch_size must be a"),
        ({**BASE, "trainer": {"max_steps": "two"}}, "trainer.max_steps must be a whole number, got 'two'"),
        ({**BASE, "trainer": {"use_cpu": "yes"}}, "trainer.use_cpu must be true or false, got 'yes'"),
        ({**BASE, "trainer": ["max_steps"]}, "trainer must be a mapping"),
        ({**BASE, "trainer": {"output_dir": "x"}}, "give trainer.output_dir at the top level of the config, as output"),
        ({**BASE, "heldout_per_source": "many"}, "heldout_per_source must be a whole number or null, got 'many'"),
        ({**BASE, "short_rows": "keep"}, "short_rows must be one of 'resample', 'drop', got 'keep'"),
        ({**BASE, "overwrite": "yes"}, "overwrite must be true or false, got 'yes'"),
        ({**BASE, "model": 3}, "model must be a string, got 3"),
        ({**BASE, "sources": "books"}, "sources must be a non-empty list"),
        ({**BASE, "sources": ["books"]}, "source 1 must be a mapping of keys to values, got str"),
        (_source(preset="LocalDoc/nope"), "source 1: unknown preset 'LocalDoc/nope'"),
        ([1, 2], "the config must be a mapping"),
    ],
)
def test_wrong_kinds_and_values_are_one_line_config_errors_naming_the_key(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        parse_train_config(values)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({**BASE, "model": "./no-such-model"}, "model ./no-such-model is not a folder"),
        (_source(path="./no/such/books"), "source 1: path ./no/such/books is not a folder"),
        (_source(repo="./no/such/books"), "source 1: ./no/such/books looks like a local folder, but there is none"),
    ],
)
def test_missing_local_folders_are_named_before_anything_is_read(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_train_config(values).check_paths()


def test_a_float_written_without_a_dot_is_read_as_the_number_it_spells():
    config = parse_train_config({**BASE, "recipe": {"learning_rate": "2e-5"}, "trainer": {"max_steps": 3}})
    assert config.recipe.learning_rate == 2e-5 and config.trainer == {"max_steps": 3}


@pytest.fixture
def no_model_loading(monkeypatch):
    """Any model load fails the test: the checks must come first."""
    import colbert_az_pylate.loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was checked")

    monkeypatch.setattr(colbert_az_pylate.loading, "load", refuse)


def _write_config(tmp_path, **changes):
    data = write_books_folder(tmp_path / "books", queries=12, passages=30)
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    config = {"model": str(model), "output": str(tmp_path / "out"), "rows": 50,
              "sources": [{"preset": BOOKS, "path": str(data), "weight": 1.0}], **changes}  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return str(tmp_path / "recipe.yaml")


def _run(capsys, *argv) -> tuple[int, list[str]]:
    """Exit code and the error lines (progress lines, ours and the data reader's, left out)."""
    capsys.readouterr()  # the fixture's own output
    code = main(["train", "--config", *argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if "error" in line]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rows": "lots"}, "error: rows must be a whole number, got 'lots'"),
        ({"sources": [{"preset": BOOKS, "repo": "LocalDoc/x", "weight": "heavy"}]}, "error: source 1: weight must be"),
        ({"recipe": {"learning_rate": "fast"}}, "error: recipe.learning_rate must be a number, got 'fast'"),
        ({"trainer": {"max_steps": "two"}}, "error: trainer.max_steps must be a whole number, got 'two'"),
        ({"trainer": {"eval_strategy": "sometimes"}}, "error: the trainer refuses these settings"),
        ({"sources": [{"preset": BOOKS, "path": "/no/such", "weight": 1}]}, "error: source 1: path /no/such is not"),
        # values the trainer accepted only to fail after the model loaded (exit 3), or to train nothing (exit 0)
        ({"trainer": {"per_device_train_batch_size": -1}}, "error: per_device_train_batch_size must be a whole"),
        ({"trainer": {"learning_rate": -1.0}}, "error: learning_rate must be >= 0, got -1.0"),
        ({"trainer": {"max_steps": -1, "num_train_epochs": -2}}, "error: nothing to train"),
        ({"trainer": {"max_steps": -5}}, "error: max_steps must be > 0"),
    ],
)
def test_the_cli_refuses_wrong_kinds_with_one_line_before_any_model_loads(
    tmp_path, capsys, no_model_loading, changes, message
):
    code, error = _run(capsys, _write_config(tmp_path, **changes))
    assert code == 2 and len(error) == 1 and error[0].startswith(message), error


def test_the_cli_refuses_a_non_empty_output_before_any_model_loads(tmp_path, capsys, no_model_loading):
    config = _write_config(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.txt").write_text("last week's run", encoding="utf-8")
    code, error = _run(capsys, config)
    assert code == 2 and len(error) == 1 and "exists and is not empty (results.txt); pass --overwrite" in error[0]
    assert (tmp_path / "out" / "results.txt").read_text(encoding="utf-8") == "last week's run"


@pytest.mark.parametrize("output", ["model", "model/finetuned", "."])
def test_the_cli_never_writes_the_model_it_trains_even_with_overwrite(
    tmp_path, capsys, no_model_loading, monkeypatch, output
):
    monkeypatch.chdir(tmp_path)
    config = _write_config(tmp_path, output=output, model="./model")
    code, error = _run(capsys, config, "--overwrite")
    assert code == 2 and len(error) == 1 and "the model being trained (./model)" in error[0]


def test_the_cli_resume_true_without_a_checkpoint_is_one_line(tmp_path, capsys, no_model_loading):
    code, error = _run(capsys, _write_config(tmp_path, resume_from_checkpoint=True))
    assert code == 2 and len(error) == 1 and "holds no complete checkpoint-N folder" in error[0]


def test_a_source_without_path_that_cannot_be_reached_offline_says_to_download_and_give_path(
    tmp_path, capsys, no_model_loading, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    unreachable = [{"preset": BOOKS, "repo": "LocalDoc/no-such-colbert-az-data", "weight": 1}]
    code, error = _run(capsys, _write_config(tmp_path, sources=unreachable))
    assert code == 2 and len(error) == 1 and "give DIR as the source's path (path: in the YAML)" in error[0]


def test_the_cli_refuses_an_unknown_key_with_one_line_and_exit_code_2(tmp_path, capsys):
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({**BASE, "epochs": 3}), encoding="utf-8")
    assert main(["train", "--config", str(config)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: unknown key 'epochs' in the config; known keys:")


def test_train_from_a_raw_layout_replaces_an_existing_output_with_overwrite_and_reports_held_out_metrics(
    checkpoints, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("COLBERT_AZ_CACHE", str(tmp_path / "cache"))
    (tmp_path / "out" / "checkpoint-9").mkdir(parents=True)  # an earlier run's
    (tmp_path / "out" / "stale.txt").write_text("old", encoding="utf-8")
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
        "overwrite": True,
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    capsys.readouterr()  # the data writer's own output
    assert main(["train", "--config", str(tmp_path / "recipe.yaml"), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert captured.err == ""  # --json: no progress, no trainer log lines, no third-party bars
    assert report["data"][0] == "9 training rows, 3 held-out triplets"
    assert set(report["heldout"]) == {"books", "macro"} and set(report["heldout"]["macro"]) >= {"R@1", "NDCG@10"}
    assert (tmp_path / "out" / "projection.pt").is_file() and (tmp_path / "out" / "modules.json").is_file()
    assert not (tmp_path / "out" / "stale.txt").exists() and not (tmp_path / "out" / "checkpoint-9").exists()
    assert load(tmp_path / "out", device="cpu").encode(["Bakı"], is_query=True)[0].shape[0] == 32


def test_the_example_recipe_parses_with_the_card_defaults():
    from pathlib import Path

    from colbert_az_pylate.training.config import load_train_config

    config = load_train_config(Path(__file__).parents[1] / "examples" / "recipe.yaml")
    assert [source.weight for source in config.sources] == [50, 25, 15, 10]
    assert config.recipe.learning_rate == 1e-6 and config.sources[3].resolved_schema().pairs_config == "triplets"
