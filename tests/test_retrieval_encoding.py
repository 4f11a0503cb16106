"""Sharded encoding: the same shards from one process or two (torchrun, gloo), a rerun skips finished shards,
an index built from shards answers as one built from the corpus, and a bad shard folder is one error line."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from colbert_az_pylate.cli import EXIT_BAD_INPUT, main
from colbert_az_pylate.retrieval.corpus import Corpus, read_corpus
from colbert_az_pylate.retrieval.encoding import MANIFEST, EncodedCorpus, encode_corpus
from colbert_az_pylate.retrieval.searcher import Searcher

WORDS = ["Bakı", "Gəncə", "Şəki", "Lənkəran", "Quba", "Naxçıvan", "Şamaxı", "Zaqatala", "Qəbələ", "Sumqayıt"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Two tiny converted models (random weights) of the same shape and tokenizer, different weights."""
    from tiny_checkpoints import build_checkpoint

    from colbert_az_pylate import convert

    root = tmp_path_factory.mktemp("encoding")
    made = {}
    for name, seed in (("model", 0), ("other", 1)):
        convert(build_checkpoint(root / f"raw-{name}", "gemma", embedding_dim=16, seed=seed), root / name, verify=False)
        made[name] = str(root / name)
    return made


@pytest.fixture
def corpus_file(tmp_path) -> str:
    """Seven short documents and one long one (split into passages), each text distinct."""
    rows = [{"id": f"d{i}", "text": f"{WORDS[i]} şəhəri {i} haqqında qısa mətn.", "region": str(i)} for i in range(7)]
    long = " ".join(f"{WORDS[i % 10]} cümləsi nömrə {i} burada yazılıb." for i in range(300))
    rows.insert(3, {"id": "long", "text": long + " Son fakt: Xınalıq ən hündür kənddir.", "region": "x"})
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def _shard_files(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bad(argv: list[str], capsys) -> str:
    assert main(argv) == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in "".join(lines), lines
    return lines[-1]


@pytest.mark.slow
def test_shards_from_two_torchrun_processes_equal_shards_from_one(models, corpus_file, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    arguments = ["encode", models["model"], corpus_file, "--shard-size", "3", "--batch-size", "2", "--json"]
    one = subprocess.run([sys.executable, "-m", "colbert_az_pylate", *arguments, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(_free_port()), "-m", "colbert_az_pylate"]  # fmt: skip
    two = subprocess.run([*torchrun, *arguments, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    reports = [json.loads(line) for line in two.stdout.splitlines() if line.startswith("{")]
    assert sorted(report["encoded"] for report in reports) == [1, 2]  # shards 0, 2 on rank 0; shard 1 on rank 1
    assert any(report["complete"] for report in reports)
    assert json.loads(one.stdout)["encoded"] == 3
    single, double = _shard_files(tmp_path / "one"), _shard_files(tmp_path / "two")
    assert (
        sorted(single)
        == sorted(double)
        == [MANIFEST, "plan.json"] + [f"shard-0000{n}.{suffix}" for n in range(3) for suffix in ("json", "npy")]
    )
    assert single == double  # byte for byte: vectors, ids, payloads, checksums


class CountingModel:
    """The model, counting the texts it is asked to encode."""

    def __init__(self, model) -> None:
        self.model, self.encoded = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __getitem__(self, item):
        return self.model[item]

    def encode(self, texts, **kwargs):
        self.encoded.extend(texts)
        return self.model.encode(texts, **kwargs)


def test_a_rerun_encodes_only_the_shards_a_killed_run_left_unfinished(models, corpus_file, tmp_path):
    from colbert_az_pylate import load

    corpus, out = read_corpus(corpus_file), tmp_path / "enc"
    model = CountingModel(load(models["model"], device="cpu"))
    first = encode_corpus(model, corpus, out, shard_size=2, show_progress_bar=False)
    assert (first.shards, first.encoded, first.complete) == (4, 4, True)
    finished = _shard_files(out)
    # A run killed while writing shard 2: its record never appeared, a temporary file and no manifest were left.
    (out / "shard-00002.json").unlink()
    (out / MANIFEST).unlink()
    (out / ".shard-00002.npy.tmp-999").write_bytes(b"half")
    model.encoded.clear()
    second = encode_corpus(model, corpus, out, shard_size=2, show_progress_bar=False)
    assert (second.encoded, second.skipped, second.complete) == (1, 3, True)
    assert model.encoded == corpus.texts[4:6]  # shard 2 only: documents 4 and 5
    assert {name: data for name, data in _shard_files(out).items() if not name.startswith(".")} == finished
    model.encoded.clear()
    assert encode_corpus(model, corpus, out, shard_size=2, show_progress_bar=False).skipped == 4
    assert model.encoded == []


def test_an_index_from_encoded_shards_answers_as_the_index_from_the_corpus(models, corpus_file, tmp_path, capsys):
    assert main(["encode", models["model"], corpus_file, "--out", str(tmp_path / "enc"), "--shard-size", "3"]) == 0
    assert main(["index", "--from-encoded", str(tmp_path / "enc"), "--index", str(tmp_path / "shards")]) == 0
    assert main(["index", models["model"], corpus_file, "--index", str(tmp_path / "direct")]) == 0
    summary = capsys.readouterr().out
    assert "1 of 8 documents split" in summary
    direct, from_shards = Searcher.open(tmp_path / "direct"), Searcher.open(tmp_path / "shards")
    assert len(direct) == len(from_shards) == 8
    queries = [*read_corpus(corpus_file).texts, "Xınalıq ən hündür kənddir"]
    for query in queries:
        for exact in (False, True):
            expected, got = direct.search(query, k=8, exact=exact), from_shards.search(query, k=8, exact=exact)
            assert [(h.id, h.passage, h.span, h.text, h.metadata) for h in got] == [
                (h.id, h.passage, h.span, h.text, h.metadata) for h in expected
            ]
            assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=0.02)  # float16 shards


def _break(kind: str, out, models, corpus_file) -> None:
    if kind == "another model":
        encode_corpus(models["other"], read_corpus(corpus_file), out, shard_size=3, show_progress_bar=False)
        return
    encode_corpus(models["model"], read_corpus(corpus_file), out, shard_size=3, show_progress_bar=False)
    if kind == "missing shard":
        (out / "shard-00001.npy").unlink()
    elif kind == "truncated shard":
        data = (out / "shard-00002.npy").read_bytes()
        (out / "shard-00002.npy").write_bytes(data[: len(data) // 2])
    elif kind == "extra shard":
        (out / "shard-00007.npy").write_bytes((out / "shard-00000.npy").read_bytes())
    elif kind == "unfinished":
        (out / MANIFEST).unlink()
        (out / "shard-00001.json").unlink()
    elif kind == "stopped before the manifest":
        (out / MANIFEST).unlink()


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("another model", "was encoded by"),
        ("missing shard", "shard shard-00001.npy is missing"),
        ("truncated shard", "shard-00002.npy in"),
        ("extra shard", "holds shard-00007.npy, which its manifest does not list"),
        ("unfinished", "is unfinished (2 of 3 shards)"),
        ("stopped before the manifest", "every shard in"),
    ],
)
def test_a_bad_shard_folder_is_one_error_line_and_no_index_is_made(models, corpus_file, tmp_path, capsys, kind, said):
    out, index = tmp_path / "enc", tmp_path / "index"
    _break(kind, out, models, corpus_file)
    err = _bad(["index", models["model"], "--from-encoded", str(out), "--index", str(index)], capsys)
    assert said in err, err
    assert not index.exists() or not any(index.iterdir())


def test_an_encoding_stopped_before_its_manifest_is_finished_by_a_rerun_that_encodes_nothing(
    models, corpus_file, tmp_path, capsys, monkeypatch
):
    import colbert_az_pylate.retrieval.encoding as encoding

    out = tmp_path / "enc"
    encode_corpus(models["model"], read_corpus(corpus_file), out, shard_size=3, show_progress_bar=False)
    manifest = (out / MANIFEST).read_bytes()
    (out / MANIFEST).unlink()
    err = _bad(["index", models["model"], "--from-encoded", str(out), "--index", str(tmp_path / "index")], capsys)
    assert "is unfinished (3 of 3" not in err and "nothing is encoded again" in err
    monkeypatch.setattr(encoding, "encode_document_vectors", lambda *args, **kwargs: pytest.fail("encoded again"))
    report = encode_corpus(models["model"], read_corpus(corpus_file), out, shard_size=3, show_progress_bar=False)
    assert report.complete and (out / MANIFEST).read_bytes() == manifest


def test_encoding_into_a_folder_of_another_corpus_or_setting_is_refused(models, corpus_file, tmp_path, capsys):
    out = tmp_path / "enc"
    encode_corpus(models["model"], Corpus(["a"], ["Bakı"], [{}]), out, show_progress_bar=False)
    err = _bad(["encode", models["model"], corpus_file, "--out", str(out)], capsys)
    assert "holds an encoding with another corpus" in err
    err = _bad(["encode", models["other"], corpus_file, "--out", str(tmp_path / "enc"), "--shard-size", "5"], capsys)
    assert "another model, corpus, shard_size" in err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep", encoding="utf-8")
    err = _bad(["encode", models["model"], corpus_file, "--out", str(tmp_path / "notes")], capsys)
    assert "holds no encoding" in err
    assert len(EncodedCorpus.open(out)) == 1  # the first encoding is untouched


@pytest.mark.slow
def test_a_rerun_after_a_real_sigkill_skips_finished_shards_and_ends_as_an_uninterrupted_run(models, tmp_path, capsys):
    import signal
    import time

    rows = [{"id": f"k{i}", "text": f"{WORDS[i % 10]} {i} {WORDS[(i * 7) % 10]} mətni, sıra {i}."} for i in range(600)]
    corpus_file = tmp_path / "big.jsonl"
    corpus_file.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    arguments = ["encode", models["model"], str(corpus_file), "--shard-size", "2", "--batch-size", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "colbert_az_pylate", *arguments, "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (out / "shard-00000.json").exists():
            assert process.poll() is None, f"encode ended before any shard: {process.stderr.read()[-3000:]!r}"
            assert time.monotonic() < deadline, "no shard finished within 240 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert not (out / MANIFEST).exists(), "encode finished before it was killed: enlarge the corpus"
    # A shard with a .json is finished (the .json is renamed in last); its .npy and .json must not be written again.
    stems = [path.name[: -len(".json")] for path in out.glob("shard-*.json")]
    finished = {name: (out / name).stat() for stem in stems for name in (f"{stem}.npy", f"{stem}.json")}
    finished = {name: (stat.st_ino, stat.st_mtime_ns) for name, stat in finished.items()}
    done = len(stems)
    assert 1 <= done < 300, done
    leftovers = sorted(path.name for path in out.iterdir() if path.name.startswith("."))
    # a killed writer's temporary files are named after it: .<name>.tmp-<pid>-<random> (colbert_az_pylate.files)
    assert all(re.fullmatch(rf"\..+\.tmp-{process.pid}-[0-9a-f]{{8}}", name) for name in leftovers), leftovers

    rerun = subprocess.run([sys.executable, "-m", "colbert_az_pylate", *arguments, "--out", str(out), "--json"],
                           capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout)
    assert (summary["shards"], summary["skipped"], summary["encoded"]) == (300, done, 300 - done)
    assert summary["complete"] is True
    for name, (inode, mtime) in finished.items():  # the shards finished before the kill were not written again
        stat = (out / name).stat()
        assert (stat.st_ino, stat.st_mtime_ns) == (inode, mtime), name
    # Temporary files of the killed process may remain (nothing removes them); no new ones, and they are ignored.
    assert sorted(path.name for path in out.iterdir() if path.name.startswith(".")) == leftovers

    assert main([*arguments, "--out", str(tmp_path / "whole")]) == 0
    resumed, whole = _shard_files(out), _shard_files(tmp_path / "whole")
    assert {name: data for name, data in resumed.items() if not name.startswith(".")} == whole  # byte for byte
    index = tmp_path / "index"
    assert main(["index", "--from-encoded", str(out), "--index", str(index)]) == 0
    capsys.readouterr()
    searcher = Searcher.open(index)
    assert len(searcher) == 600
    assert {hit.id for hit in searcher.search(rows[123]["text"], k=600, exact=True)} == {row["id"] for row in rows}
