"""Training on pylate's trainer: tokenizes like inference, checkpoints are converted folders that verify."""

from __future__ import annotations

import json

import pytest
import torch
from pylate.utils import ColBERTCollator

from colbert_az_pylate import load, verify
from colbert_az_pylate.fixtures import CORPUS
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
    with pytest.raises(ValueError, match="same number of documents"):
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
    with pytest.raises(ValueError, match=f"training row 1 has an? {message}"):
        train(model, [ROWS[0], {**ROWS[1], **change}], tmp_path / "out")
