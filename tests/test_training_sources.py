"""Reading reranked data sets: hub configs by preset, local folders in the same layout, offline errors."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError
from colbert_az_pylate.training.data import PRESETS, SourceSchema, build_id_rows
from colbert_az_pylate.training.sources import TextTable, load_source

BOOKS = "LocalDoc/azerbaijani_books_retriever_corpus-reranked"


def books_tables(queries: int = 6, passages: int = 20) -> dict[str, list[dict]]:
    """A tiny data set in the books layout: configs corpus, queries, hard_negatives."""
    corpus = [{"passage_id": i, "content": f"passage {i}"} for i in range(passages)]
    query_rows = [
        {"query_id": f"q{i}", "passage_id": i, "query": f"sual {i}", "query_type": "x"} for i in range(queries)
    ]
    pairs = []
    for i in range(queries):
        row = {"query_id": f"q{i}", "passage_id": i, "pos_score": 10.0}
        for k in range(1, 11):
            row[f"neg_{k}_id"], row[f"neg_{k}_score"] = (i + k) % passages, float(k)
        pairs.append(row)
    return {"corpus": corpus, "queries": query_rows, "hard_negatives": pairs}


def write_books_folder(folder, **sizes):
    """corpus as parquet, queries as JSONL, hard_negatives as a folder of parquet shards (as on the hub)."""
    tables = books_tables(**sizes)
    folder.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(tables["corpus"]).to_parquet(str(folder / "corpus.parquet"))
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(row) for row in tables["queries"]), encoding="utf-8")
    (folder / "hard_negatives").mkdir(exist_ok=True)
    Dataset.from_list(tables["hard_negatives"]).to_parquet(str(folder / "hard_negatives" / "train-00000.parquet"))
    return folder


def test_a_local_folder_in_the_books_layout_gives_training_rows_with_ids(tmp_path):
    source = load_source(write_books_folder(tmp_path / "books"), BOOKS, name="books")
    rows = list(build_id_rows(source, negatives=8))
    assert len(rows) == 6 and source.stats.false_negatives_removed == 6  # neg_10 scores 10 > 0.9 × 10
    assert rows[0]["query_id"] == "q0" and rows[0]["document_ids"][0] == "0"
    assert source.queries["q0"] == "sual 0" and source.corpus["3"] == "passage 3"


def test_hub_sources_read_the_presets_configs_with_the_revision():
    tables = {name: Dataset.from_list(rows) for name, rows in books_tables().items()}
    calls = []

    def loader(repo, config, split, revision):
        calls.append((repo, config, split, revision))
        return tables[config]

    source = load_source(BOOKS, BOOKS, revision="abc123", loader=loader)
    assert source.name == "azerbaijani_books_retriever_corpus-reranked"
    assert sorted(calls) == [(BOOKS, config, "train", "abc123") for config in ("corpus", "hard_negatives", "queries")]


def test_a_schema_without_a_queries_config_reads_query_texts_from_the_pairs_table(tmp_path):
    schema = PRESETS["LocalDoc/azerbaijan_legislation_queries_passages"]
    folder = tmp_path / "laws"
    folder.mkdir()
    Dataset.from_list([{"chunk_id": "c1", "law_id": 1, "law_title": "t", "passage": "maddə"}]).to_parquet(
        str(folder / "corpus.parquet")
    )
    pairs = [{"query_id": "q", "query": "qanun nədir", "chunk_id": "c1", "pos_score": 1.0, "neg_1_id": "c1"}]
    Dataset.from_list([{**pairs[0], "neg_1_score": 0.1}]).to_json(str(folder / "hard_negatives.jsonl"))
    source = load_source(folder, schema)
    assert source.queries["q"] == "qanun nədir"


def test_the_hub_offline_is_a_one_line_error_saying_to_download_and_give_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataFormatError, match="HF_HUB_OFFLINE") as caught:
        load_source("LocalDoc/no-such-dataset-colbert-az", BOOKS)
    assert "\n" not in str(caught.value)
    assert "huggingface-cli download --repo-type dataset LocalDoc/no-such-dataset-colbert-az" in str(caught.value)
    assert "give DIR as the source's path (path: in the YAML)" in str(caught.value)


@pytest.mark.parametrize("location", ["./data/books", "data/books/", "/nonexistent/books", "a/b/c"])
def test_a_missing_local_folder_is_never_sent_to_the_hub(location):
    def loader(*args, **kwargs):
        raise AssertionError("the hub was asked")

    with pytest.raises(DataFormatError, match=f"no folder {location}: check the path"):
        load_source(location, BOOKS, loader=loader)


def test_a_malformed_local_table_is_a_one_line_error_naming_the_file(tmp_path):
    folder = write_books_folder(tmp_path / "books")
    (folder / "queries.jsonl").write_text('{"query_id": "q0", "query": "sual"}\n{not json\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"cannot read .*queries\.jsonl") as caught:
        load_source(folder, BOOKS)
    assert "\n" not in str(caught.value)


def test_unknown_presets_missing_configs_and_unknown_columns_are_named(tmp_path):
    with pytest.raises(InvalidArgumentError, match="unknown preset"):
        load_source(tmp_path, "LocalDoc/unknown")
    with pytest.raises(DataFormatError, match="no 'hard_negatives' table"):
        load_source(tmp_path, BOOKS)
    folder = write_books_folder(tmp_path / "books")
    wrong = SourceSchema(
        "pid", "passage", "query_id", "query", "passage_id", "pos_score", "neg_{k}_id", "neg_{k}_score"
    )
    with pytest.raises(DataFormatError, match=r"columns \['pid', 'passage'\] are missing"):
        load_source(folder, wrong)


def test_text_tables_index_ids_and_read_texts_on_access():
    table = TextTable(Dataset.from_dict({"id": [3, 1], "text": ["üç", "bir"]}), "id", "text")
    assert table["1"] == "bir" and table.get("9") is None and sorted(table) == ["1", "3"]
