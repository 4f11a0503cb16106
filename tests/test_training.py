"""Training on pylate's trainer: tokenizes like inference, checkpoints are converted folders that verify."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from pylate.utils import ColBERTCollator
from tiny_checkpoints import CORPUS

from colbert_az_pylate import load, verify
from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError, OutputExistsError
from colbert_az_pylate.losses import DistillationInfoNCE
from colbert_az_pylate.tokenization import reference_document_inputs, reference_query_inputs
from colbert_az_pylate.training.trainer import Recipe, batch_tokenizer, train

ROWS = [
    {
        "query": CORPUS[i].split(",")[0][:30].strip(),
        "documents": [CORPUS[i], CORPUS[(i + 1) % len(CORPUS)], CORPUS[(i + 2) % len(CORPUS)]],
        "scores": [5.0, 1.0, 0.5],
    }
    for i in range(len(CORPUS))
]


def test_training_batches_are_tokenized_exactly_like_the_reference(converted):
    model = load(converted["gemma"][0], device="cpu")
    batch = ColBERTCollator(model.tokenize)(ROWS[:2])
    tokenizer = model.tokenizer
    queries = reference_query_inputs(tokenizer, [row["query"] for row in ROWS[:2]])["input_ids"]
    assert torch.equal(batch["query_input_ids"], queries)
    documents = reference_document_inputs(tokenizer, ROWS[0]["documents"][:1])
    length = int(documents["attention_mask"].sum())
    assert batch["documents_input_ids"][0, :length].tolist() == documents["input_ids"][0, :length].tolist()
    assert int(batch["documents_attention_mask"][0].sum()) == length


def test_documents_padded_to_the_longest_give_the_loss_of_max_length_padding(converted):
    model = load(converted["gemma"][0], device="cpu")
    loss = DistillationInfoNCE(model)
    values = []
    for tokenize in (model.tokenize, batch_tokenizer(model)):
        batch = ColBERTCollator(tokenize)(ROWS[:3])
        features = [
            {key.removeprefix(f"{column}_"): value for key, value in batch.items() if key.startswith(f"{column}_")}
            for column in ("query", "documents")
        ]
        values.append((loss(features, batch["label"]), batch["documents_input_ids"].shape[1]))
    (max_length_loss, max_length), (longest_loss, longest) = values
    assert longest < max_length == 256
    assert torch.allclose(max_length_loss, longest_loss, atol=1e-6)


@pytest.mark.slow
def test_a_short_run_saves_checkpoints_that_plain_pylate_and_the_reference_agree_on(converted, tmp_path):
    model = load(converted["wordpiece"][0], device="cpu")
    before = model[1].linear.weight.detach().clone()
    recipe = Recipe(per_device_train_batch_size=4, gradient_accumulation_steps=1, learning_rate=1e-3, bf16=False)
    eval_rows = [
        {"query": r["query"], "positive": r["documents"][0], "negatives": r["documents"][1:]} for r in ROWS[:4]
    ]
    train(model, ROWS, tmp_path / "out", eval_rows=eval_rows, recipe=recipe, max_steps=3, save_steps=2,
          eval_steps=2, logging_steps=1, use_cpu=True)  # fmt: skip
    assert not torch.equal(before, model[1].linear.weight.detach())
    checkpoint = tmp_path / "out" / "checkpoint-2"
    assert (checkpoint / "projection.pt").is_file()
    for folder in (checkpoint, tmp_path / "out"):
        report = verify(folder, probes=["Bakı Azərbaycanın paytaxtıdır.", "sual"])
        assert report.passed, report.failure()


def test_rows_with_different_group_sizes_are_refused(converted, tmp_path):
    model = load(converted["wordpiece"][0], device="cpu")
    rows = [ROWS[0], {**ROWS[1], "documents": ROWS[1]["documents"][:2], "scores": [1.0, 0.0]}]
    with pytest.raises(DataFormatError, match="same number of documents"):
        train(model, rows, tmp_path / "out")


def test_training_runs_on_the_lazy_id_dataset_with_held_out_triplets(converted, tmp_path):
    from test_training_sources import BOOKS, write_books_folder

    from colbert_az_pylate.training.dataset import prepare_training_data
    from colbert_az_pylate.training.sources import load_source

    source = load_source(write_books_folder(tmp_path / "books", queries=12, passages=30), BOOKS, name="books")
    data = prepare_training_data([(source, 1.0)], total=100, heldout_per_source=4, negatives=3)
    model = load(converted["wordpiece"][0], device="cpu")
    before = model[1].linear.weight.detach().clone()
    recipe = Recipe(per_device_train_batch_size=4, gradient_accumulation_steps=1, learning_rate=1e-3, bf16=False)
    train(model, data.train, tmp_path / "out", eval_rows=data.heldout, recipe=recipe, max_steps=2, eval_steps=2,
          save_strategy="no", use_cpu=True)  # fmt: skip
    assert not torch.equal(before, model[1].linear.weight.detach())


@pytest.mark.slow
def test_resuming_from_a_checkpoint_finishes_where_the_uninterrupted_run_ends(converted, tmp_path):
    recipe = Recipe(per_device_train_batch_size=4, gradient_accumulation_steps=1, learning_rate=1e-3, bf16=False)
    settings = {"recipe": recipe, "max_steps": 4, "save_steps": 2, "use_cpu": True}
    straight = train(load(converted["wordpiece"][0], device="cpu"), ROWS, tmp_path / "straight", **settings)
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    resumed = train(load(converted["wordpiece"][0], device="cpu"), ROWS, tmp_path / "resumed",
                    resume_from_checkpoint=str(checkpoint), **settings)  # fmt: skip
    state = json.loads((tmp_path / "resumed" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert not (tmp_path / "resumed" / "checkpoint-2").exists()  # steps 1-2 were not trained again
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert verify(tmp_path / "resumed", probes=["Bakı"]).passed


@pytest.mark.parametrize(
    ("change", "message"),
    [({"scores": [float("nan"), 1.0, 0.5]}, "NaN or infinite"), ({"documents": ["a", " ", "b"]}, "empty query")],
)
def test_rows_with_non_finite_scores_or_empty_texts_are_refused(converted, tmp_path, change, message):
    model = load(converted["wordpiece"][0], device="cpu")
    with pytest.raises(DataFormatError, match=f"training row 1 has an? {message}"):
        train(model, [ROWS[0], {**ROWS[1], **change}], tmp_path / "out")


RECIPE = Recipe(per_device_train_batch_size=4, gradient_accumulation_steps=1, learning_rate=1e-3, bf16=False)


@pytest.mark.slow
def test_train_refuses_a_non_empty_output_unless_overwrite_and_never_the_models_own_folder(converted, tmp_path):
    folder = converted["wordpiece"][0]
    model = load(folder, device="cpu")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(OutputExistsError, match="exists and is not empty"):
        train(model, ROWS, tmp_path / "out", recipe=RECIPE, max_steps=1, use_cpu=True)
    assert (tmp_path / "out" / "notes.txt").read_text(encoding="utf-8") == "keep me"
    for output in (folder, folder / "finetuned", folder.parent):
        with pytest.raises(OutputExistsError, match="the model being trained"):
            train(model, ROWS, output, recipe=RECIPE, max_steps=1, use_cpu=True, overwrite=True)
    assert verify(folder, probes=["Bakı"]).passed  # untouched


def test_resuming_the_latest_checkpoint_of_the_output_needs_no_overwrite(converted, tmp_path):
    settings = {"recipe": RECIPE, "save_steps": 2, "use_cpu": True}
    train(load(converted["wordpiece"][0], device="cpu"), ROWS, tmp_path / "out", max_steps=2, **settings)
    resumed = train(load(converted["wordpiece"][0], device="cpu"), ROWS, tmp_path / "out",
                    resume_from_checkpoint=True, max_steps=4, **settings)  # fmt: skip
    state = json.loads((tmp_path / "out" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and resumed is not None
    with pytest.raises(InvalidArgumentError, match="overwrite would delete the checkpoint being resumed"):
        train(load(converted["wordpiece"][0], device="cpu"), ROWS, tmp_path / "out", resume_from_checkpoint=True,
              overwrite=True, max_steps=6, **settings)  # fmt: skip


def _interrupt_on_save(monkeypatch, call: int) -> None:
    """Ctrl-C while the ``call``-th converted folder is being written (after its weights, before its tokenizer)."""
    import colbert_az_pylate.training.trainer as trainer_module

    calls = []
    original = trainer_module.save_tokenizer

    def save_tokenizer(tokenizer, folder):
        calls.append(folder)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(tokenizer, folder)

    monkeypatch.setattr(trainer_module, "save_tokenizer", save_tokenizer)


MODEL_FILES = ("modules.json", "model.safetensors", "projection.pt", "config.json", "tokenizer.json")


def test_ctrl_c_while_saving_a_checkpoint_leaves_no_unfinished_checkpoint(converted, tmp_path, monkeypatch):
    _interrupt_on_save(monkeypatch, call=1)
    with pytest.raises(KeyboardInterrupt):
        train(load(converted["wordpiece"][0], device="cpu"), ROWS, tmp_path / "out", recipe=RECIPE, max_steps=3,
              save_steps=2, use_cpu=True)  # fmt: skip
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_ctrl_c_while_saving_the_final_model_leaves_no_half_written_output(converted, tmp_path, monkeypatch):
    _interrupt_on_save(monkeypatch, call=2)  # checkpoint-2 is written whole; the final save is interrupted
    with pytest.raises(KeyboardInterrupt):
        train(load(converted["wordpiece"][0], device="cpu"), ROWS, tmp_path / "out", recipe=RECIPE, max_steps=3,
              save_steps=2, use_cpu=True)  # fmt: skip
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["checkpoint-2"]
    assert verify(tmp_path / "out" / "checkpoint-2", probes=["Bakı"]).passed
    monkeypatch.undo()
    resumed = train(load(converted["wordpiece"][0], device="cpu"), ROWS, tmp_path / "out", recipe=RECIPE,
                    max_steps=3, save_steps=2, use_cpu=True, resume_from_checkpoint=True)  # fmt: skip
    assert resumed is not None and all((tmp_path / "out" / name).is_file() for name in MODEL_FILES)
    assert verify(tmp_path / "out", probes=["Bakı"]).passed


@pytest.mark.slow
def test_the_readme_python_training_snippet_runs_on_a_small_source(checkpoints, tmp_path, monkeypatch):
    """The README's Train snippet as written, from a folder holding ./colbert-az and a small ./data/books."""
    from test_training_sources import write_books_folder

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    train_section = readme[readme.index("## Train") :]
    snippet = re.search(r"```python\n(.*?)```", train_section, re.S).group(1)
    assert "from colbert_az_pylate.training import" in snippet and "prepare_training_data" in snippet
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLBERT_AZ_CACHE", str(tmp_path / "cache"))
    (tmp_path / "colbert-az").symlink_to(checkpoints["wordpiece"], target_is_directory=True)
    write_books_folder(tmp_path / "data" / "books", queries=40, passages=50)
    exec(compile(snippet, "README.md", "exec"), {})
    assert (tmp_path / "finetuned" / "projection.pt").is_file()
    assert verify(tmp_path / "finetuned", probes=["Bakı"]).passed
