"""The index/search/demo commands on bad input: one ``error:`` line, exit 2, nothing created, no work wasted."""

from __future__ import annotations

import json

import pytest

from colbert_az_pylate.cli import EXIT_BAD_INPUT, main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A tiny converted model (random weights; parity is checked by the conversion tests, not needed here)."""
    from tiny_checkpoints import build_checkpoint

    from colbert_az_pylate import convert

    root = tmp_path_factory.mktemp("cli-retrieval")
    convert(build_checkpoint(root / "raw", "gemma", embedding_dim=16), root / "model", verify=False)
    return str(root / "model")


def write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def bad_input(argv: list[str], capsys) -> str:
    """Run the command; it must exit 2 with one ``error:`` line after any progress lines, which is returned."""
    assert main(argv) == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in "".join(lines), lines
    assert not any(line.startswith("error") for line in lines[:-1]), lines
    return lines[-1]


@pytest.mark.parametrize(("flag", "value"), [("--batch-size", "-3"), ("--batch-size", "0"), ("--pool-factor", "0")])
def test_index_refuses_a_bad_count_before_reading_loading_or_creating_anything(tmp_path, capsys, flag, value):
    index = tmp_path / "index"
    err = bad_input(["index", "no-such-model", "no-such-corpus.jsonl", "--index", str(index), flag, value], capsys)
    assert f"{flag} must be a whole number >= 1, got {value}" in err
    assert not index.exists()


@pytest.mark.parametrize("argv", [["search", "IDX", "q", "-k", "0"], ["demo", "-k", "0"], ["demo", "-k", "-2"]])
def test_search_and_demo_refuse_k_below_one_at_once(tmp_path, capsys, monkeypatch, argv):
    import colbert_az_pylate.retrieval.demo as demo

    monkeypatch.setattr(demo, "_source", lambda *a: pytest.fail("the demo started working on a k it refuses"))
    err = bad_input([str(tmp_path) if a == "IDX" else a for a in argv], capsys)
    assert "-k must be a whole number >= 1" in err


def test_a_missing_corpus_is_said_to_be_missing_not_looked_up_on_the_hub(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = bad_input(["index", tiny_model, "nothere.jsonl", "--index", "idx"], capsys)
    assert "corpus file nothere.jsonl does not exist" in err and "Hub" not in err
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.jsonl", '{"id": "a", "text": "x"}\n{"id": "b", "text": \n', "c.jsonl line 2 is not valid JSON"),
        ("c.csv", "id,text\n", "c.csv holds no documents"),
        ("c.csv", "id,text\n1,x\n2,y,z\n", "c.csv line 3 has 3 fields"),
        ("c.jsonl", '{"id": null, "text": "x"}\n{"id": null, "text": "y"}\n', "line 1 has no id (null)"),
        ("c.jsonl", '{"pid": "a", "text": "x"}\n', "--id-column"),
    ],
)
def test_a_malformed_corpus_names_the_file_and_line_and_creates_no_index(
    tiny_model, tmp_path, capsys, name, text, message
):
    corpus = write(tmp_path / name, text)
    err = bad_input(["index", tiny_model, corpus, "--index", str(tmp_path / "idx")], capsys)
    assert message in err
    assert not (tmp_path / "idx").exists()


def test_index_naming_a_file_is_refused_and_the_file_kept(tiny_model, tmp_path, capsys):
    corpus = write(tmp_path / "c.jsonl", '{"id": "a", "text": "Bakı"}\n')
    notes = write(tmp_path / "notes.txt", "mine")
    assert "is a file" in bad_input(["index", tiny_model, corpus, "--index", notes], capsys)
    assert "is a file" in bad_input(["search", notes, "Bakı"], capsys)
    assert "index folder name is empty" in bad_input(["index", tiny_model, corpus, "--index", ""], capsys)
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_ids_are_indexed_exactly_as_written_and_reindexing_them_names_the_upsert_flag(tiny_model, tmp_path, capsys):
    corpus = write(tmp_path / "c.csv", "id,text\n007,Bakı Azərbaycanın paytaxtıdır.\n2.50,Şəki xan sarayı\n")
    index = str(tmp_path / "idx")
    assert main(["index", tiny_model, corpus, "--index", index, "--json"]) == 0
    capsys.readouterr()
    assert main(["search", index, "Şəki xan sarayı", "-k", "2", "--json"]) == 0
    assert {hit["id"] for hit in json.loads(capsys.readouterr().out)[0]["hits"]} == {"007", "2.50"}
    err = bad_input(["index", tiny_model, corpus, "--index", index], capsys)
    assert "--upsert" in err and "--override" in err
    assert main(["index", tiny_model, corpus, "--index", index, "--upsert", "--json"]) == 0


def test_search_output_escapes_control_characters_of_documents_and_ids(tiny_model, tmp_path, capsys):
    hostile = {"id": "x\x1b]0;pwned\x07", "text": "Bakı \x1b[2J\x1b[31mqırmızı\x07 \u202eevil \x9b31m"}
    corpus = write(tmp_path / "c.jsonl", json.dumps(hostile) + "\n")
    index = str(tmp_path / "idx")
    assert main(["index", tiny_model, corpus, "--index", index, "--json"]) == 0
    capsys.readouterr()
    assert main(["search", index, "Bakı\x07", "-k", "1"]) == 0
    out = capsys.readouterr().out
    for control in ("\x1b", "\x07", "\u202e", "\x9b"):
        assert control not in out
    assert "\\x1b[31mqırmızı\\x07" in out and "\\u202eevil" in out and "x\\x1b]0;pwned\\x07" in out
    assert main(["search", index, "Bakı", "-k", "1", "--json"]) == 0  # JSON keeps the text exactly (escaped by JSON)
    assert json.loads(capsys.readouterr().out)[0]["hits"][0]["text"] == hostile["text"]


def test_non_json_metadata_from_a_parquet_corpus_is_refused_before_the_index_is_created(tiny_model, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": ["a"], "text": ["Bakı"], "blob": [b"\x00\x01"]}), path)
    err = bad_input(["index", tiny_model, str(path), "--index", str(tmp_path / "idx")], capsys)
    assert "cannot be stored as JSON" in err and "bytes" in err
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("backend", ["voyager", "plaid"])
def test_an_index_follows_its_model_when_the_model_folder_is_copied_or_moved(tiny_model, tmp_path, capsys, backend):
    """The same weights make the same vectors wherever the folder lies: a copy or a move of the model is accepted
    (dimension and fingerprint decide, not the path); a moved model is named, with the flag to pass."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    corpus = write(
        tmp_path / "c.jsonl", "".join(json.dumps({"id": f"d{i}", "text": f"Bakı {i}"}) + "\n" for i in range(6))
    )
    index = str(tmp_path / "index")
    assert main(["index", str(model), corpus, "--index", index, "--backend", backend]) == 0
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    assert main(["search", index, "Bakı 3", "-k", "2", "--model", str(copy), "--json"]) == 0
    capsys.readouterr()
    model.rename(tmp_path / "moved")
    message = bad_input(["search", index, "Bakı 3"], capsys)
    assert "no longer there" in message and "--model" in message
    assert main(["search", index, "Bakı 3", "-k", "2", "--model", str(tmp_path / "moved"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["hits"]


def test_a_moved_model_is_named_as_the_user_gave_it_not_where_a_link_led(tiny_model, tmp_path, capsys, monkeypatch):
    """An index records its model's absolute path as typed (a relative path made absolute, links not followed), so
    the message about a moved model names a path the user knows."""
    import shutil

    real = tmp_path / "disk" / "colbert-az"
    shutil.copytree(tiny_model, real)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "models").symlink_to(tmp_path / "disk")
    monkeypatch.chdir(tmp_path / "work")
    corpus = write(tmp_path / "work" / "c.jsonl", json.dumps({"id": "d0", "text": "Bakı"}) + "\n")
    assert main(["index", "models/colbert-az", "c.jsonl", "--index", "idx"]) == 0
    (tmp_path / "work" / "models").unlink()  # the link the user went through is gone; the folder is still there
    message = bad_input(["search", "idx", "Bakı"], capsys)
    assert f"{tmp_path / 'work' / 'models' / 'colbert-az'}, which is no longer there" in message
    assert str(tmp_path / "disk") not in message and corpus


def test_usage_errors_are_one_error_line_naming_the_command(capsys):
    for argv in (["index", "m", "c"], [], ["frob"], ["index", "m", "c", "--index", "i", "--batch-size", "abc"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: colbert-az") and "--help" in err


def test_searching_a_folder_that_is_not_an_index_says_so(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine", encoding="utf-8")
    message = bad_input(["search", str(tmp_path / "data"), "sual"], capsys)
    assert "is not an index folder" in message and "colbert-az index --index" in message
    assert (tmp_path / "data" / "notes.txt").read_text(encoding="utf-8") == "mine"
