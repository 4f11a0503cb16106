"""Corpus reading: ids exactly as written, and one-line errors naming the file and the line (no model needed)."""

from __future__ import annotations

import json

import pytest

from colbert_az_pylate.errors import ColbertAzError, DataFormatError, InvalidArgumentError
from colbert_az_pylate.retrieval.corpus import read_corpus


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_ids_are_kept_exactly_as_written(tmp_path):
    path = write(tmp_path, "c.csv", "id,text,year\n007,Bakı,2020\n2.50,Gəncə,\n1e3,Şəki,1999\n")
    corpus = read_corpus(path)
    assert corpus.ids == ["007", "2.50", "1e3"]
    assert corpus.metadata == [{"year": "2020"}, {"year": ""}, {"year": "1999"}]  # CSV cells are text, as written


def test_tsv_ids_are_kept_and_commas_stay_inside_the_text(tmp_path):
    corpus = read_corpus(write(tmp_path, "c.tsv", "id\ttext\n007\tBakı, paytaxt\n"))
    assert corpus.ids == ["007"] and corpus.texts == ["Bakı, paytaxt"]


def test_json_number_ids_are_kept_as_written_and_metadata_keeps_its_types(tmp_path):
    lines = [{"id": 2, "text": "a", "n": 2}, {"id": "x", "text": "b", "n": 2.5}]
    path = write(tmp_path, "c.jsonl", "\n".join(json.dumps(line) for line in lines) + '\n{"id": 2.50, "text": "c"}\n')
    corpus = read_corpus(path)
    assert corpus.ids == ["2", "x", "2.50"]
    assert corpus.metadata[:2] == [{"n": 2}, {"n": 2.5}]


def test_a_json_array_file_is_read_with_ids_as_written(tmp_path):
    path = write(tmp_path, "c.json", '[{"id": 7.50, "text": "a"},\n {"id": 10, "text": "b"}]')
    assert read_corpus(path).ids == ["7.50", "10"]


def test_a_text_holding_a_line_separator_stays_one_document(tmp_path):
    path = write(tmp_path, "c.jsonl", json.dumps({"id": "a", "text": "bir\u2028iki"}, ensure_ascii=False) + "\n")
    assert read_corpus(path).texts == ["bir\u2028iki"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.jsonl", '{"id": "a", "text": "x"}\n{"id": null, "text": "y"}\n', r"c.jsonl line 2 has no id \(null\)"),
        ("c.jsonl", '{"id": null, "text": "x"}\n{"id": null, "text": "y"}\n', r"line 1 has no id \(null\)"),
        ("c.csv", "id,text\n1,x\n,y\n", "c.csv line 3 has an empty id"),
        ("c.jsonl", '{"id": true, "text": "x"}\n', "line 1 has an id of type bool"),
        ("c.jsonl", '{"id": "a", "text": "x"}\n{"id": "b", "text": \n', r"c.jsonl line 2 is not valid JSON"),
        ("c.jsonl", '["a", "x"]\n', "line 1 is a JSON list, not an object"),
        ("c.csv", 'id,text\n1,x\n2,"y\n3,z\n', "c.csv line 3 is malformed: a quoted field is never closed"),
        ("c.csv", "id,text\n1,x\n2,y,z\n", "c.csv line 3 has 3 fields but the header has 2"),
        ("c.csv", "id,text\n", r"c.csv holds no documents"),
        ("c.csv", "", "c.csv is empty"),
        ("c.jsonl", "\n\n", "c.jsonl is empty"),
        ("c.csv", "id,text,id\n1,x,2\n", "names column 'id' twice"),
        ("c.csv", "id,text\n1,x\n1,y\n", r"c.csv: duplicate document ids: \['1'\]"),
        ("c.jsonl", '{"id": "a", "text": 5}\n', r"line 1 \(id 'a'\) has a text of type int"),
        ("c.jsonl", '{"id": "a", "text": "  "}\n', r"line 1 \(id 'a'\) has no text"),
        ("c.jsonl", '{"id": "a", "body": "x"}\n', r"line 1 has no column 'text'.*--text-column"),
        ("c.csv", "pid,text\n1,x\n", r"has no column 'id'.*id_column=.*--id-column"),
    ],
)
def test_bad_corpora_are_refused_with_the_file_and_the_line(tmp_path, name, text, message):
    with pytest.raises(ColbertAzError, match=message) as error:
        read_corpus(write(tmp_path, name, text))
    assert "\n" not in str(error.value)


def test_a_file_that_is_not_utf8_is_refused_with_its_line(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("id,text\n1,Bakı\n2,".encode() + "Gəncə".encode("cp1254", errors="replace") + b"\xff\n")
    with pytest.raises(DataFormatError, match=r"c\.csv line 3 is not UTF-8"):
        read_corpus(path)


@pytest.mark.parametrize("name", ["nothere.jsonl", "data/nothere.csv", "./nothere", "../x/y", "/no/such/corpus"])
def test_a_missing_file_is_said_to_be_missing_never_looked_up_on_the_hub(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgumentError, match=f"corpus file {name} does not exist") as error:
        read_corpus(name)
    assert "Hub" not in str(error.value)


def test_a_name_that_is_no_file_and_no_hub_dataset_says_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InvalidArgumentError, match="'nothere' is not a file here, and no dataset of that name"):
        read_corpus("nothere")


def test_a_folder_or_an_unknown_extension_is_refused(tmp_path):
    with pytest.raises(InvalidArgumentError, match="is a folder"):
        read_corpus(tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"\.txt is not one of"):
        read_corpus(write(tmp_path, "c.txt", "hello"))


def test_a_damaged_parquet_file_is_refused_with_one_line(tmp_path):
    with pytest.raises(DataFormatError, match=r"c\.parquet is not a readable Parquet file"):
        read_corpus(write(tmp_path, "c.parquet", "not parquet"))


def test_parquet_null_ids_are_refused_with_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": [7, None], "text": ["a", "b"]}), path)
    with pytest.raises(DataFormatError, match=r"c.parquet row 1 has no id \(null\)"):
        read_corpus(path)
    pq.write_table(pa.table({"id": [7, 8], "text": ["a", "b"]}), path)
    assert read_corpus(path).ids == ["7", "8"]


def test_parquet_dates_become_iso_text_metadata(tmp_path):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    when = datetime.datetime(2024, 1, 2, 3, 4, 5)
    pq.write_table(pa.table({"id": ["a"], "text": ["Bakı"], "day": [when.date()], "at": [when]}), path)
    assert read_corpus(path).metadata == [{"day": "2024-01-02", "at": "2024-01-02T03:04:05"}]


def test_tsv_quotes_are_text_as_in_ms_marco_collections(tmp_path):
    corpus = read_corpus(write(tmp_path, "c.tsv", 'id\ttext\n1\t"Bakı" şəhəri\n2\tdeyir: "salam\n'))
    assert corpus.texts == ['"Bakı" şəhəri', 'deyir: "salam']


@pytest.mark.parametrize(
    ("source", "columns", "message"),
    [("", {}, "corpus name is empty"), ("c.jsonl", {"id_column": "text"}, "both 'text'")],
)
def test_an_empty_corpus_name_or_one_column_for_ids_and_texts_is_refused(tmp_path, source, columns, message):
    with pytest.raises(InvalidArgumentError, match=message):
        read_corpus(source, **columns)


def test_a_parquet_nan_is_a_missing_value_stored_as_null(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["Bakı", "Gəncə"], "score": [0.5, float("nan")]}), path)
    corpus = read_corpus(path)
    assert corpus.metadata == [{"score": 0.5}, {"score": None}]
    json.dumps(corpus.metadata, allow_nan=False)  # what `search --json` prints is valid JSON


def test_nan_metadata_is_refused_before_indexing(tmp_path):
    from colbert_az_pylate.retrieval.corpus import check_metadata

    corpus = read_corpus(write(tmp_path, "c.jsonl", '{"id": "a", "text": "Bakı", "score": NaN}\n'))
    with pytest.raises(InvalidArgumentError, match=r"id 'a'.*NaN or infinity is not JSON \(use None"):
        check_metadata(corpus.metadata, corpus.ids)
