"""Evaluation protocols on small generated data in each format, and a smoke run on real AZ-MIRAGE questions."""

from __future__ import annotations

import json
import random

import pytest

from colbert_az_pylate import load
from colbert_az_pylate.cli import main
from colbert_az_pylate.evaluation.data import load_az_mirage, load_beir
from colbert_az_pylate.evaluation.metrics import evaluate_run
from colbert_az_pylate.evaluation.protocols import RETRIEVAL_METRICS, evaluate_retrieval
from colbert_az_pylate.evaluation.retrieval import exact_run

PASSAGES = {
    "d1": "bakı azərbaycanın paytaxtıdır",
    "d2": "nizami gəncəvi böyük şairdir",
    "d3": "xəzər dənizi dünyanın ən böyük gölüdür",
    "d4": "şəki xan sarayı gözəldir",
}


@pytest.fixture(scope="module")
def model(converted):
    return load(converted["wordpiece"][0], device="cpu")


def _write_beir(folder, qrels_lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for doc, text in PASSAGES.items():
            handle.write(json.dumps({"_id": doc, "title": "", "text": text}, ensure_ascii=False) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as handle:
        for query, text in (("q1", "bakı azərbaycanın paytaxtıdır"), ("q2", "nizami şair"), ("q3", "göl")):
            handle.write(json.dumps({"_id": query, "text": text}, ensure_ascii=False) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels_lines) + "\n")
    return folder


def test_exact_run_agrees_with_scoring_every_pair(model):
    run = exact_run(model, {"q": "bakı paytaxt"}, PASSAGES, k=4, show_progress_bar=False)
    reranked = {doc: float(score) for doc, score in run["q"].items()}
    assert set(reranked) == set(PASSAGES)
    assert list(run["q"]) == sorted(reranked, key=reranked.get, reverse=True)


def test_beir_protocol_reports_metrics_counts_and_left_out_lines(model, tmp_path):
    folder = _write_beir(tmp_path / "beir", ["q1\td1\t1", "q2\td2\t1", "q3\tmissing\t1", "q3\td3\t0"])
    data = load_beir(folder)
    assert any("missing from the corpus" in note for note in data.notes)
    result = evaluate_retrieval(model, data, show_progress_bar=False)
    assert result.evaluated == 2 and result.skipped == 1
    assert set(result.metrics["all"]) == set(RETRIEVAL_METRICS)
    assert result.metrics["all"] == {
        name: value
        for name, value in evaluate_run(result.run, data.qrels, (1, 5, 10)).items()
        if name in RETRIEVAL_METRICS
    }


@pytest.mark.parametrize(
    ("lines", "message"),
    [(["q1\td1"], "line 2 must be"), (["q1\td1\tx"], "line 2 must be")],
)
def test_malformed_qrels_name_the_line(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message):
        load_beir(_write_beir(tmp_path / "beir", lines))


def test_duplicate_corpus_ids_are_refused(tmp_path):
    folder = _write_beir(tmp_path / "beir", ["q1\td1\t1"])
    with open(folder / "corpus.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"_id": "d1", "text": "again"}) + "\n")
    with pytest.raises(ValueError, match=r"duplicate id 'd1' at corpus\.jsonl line 5"):
        load_beir(folder)


def test_malformed_jsonl_names_the_line(tmp_path):
    folder = _write_beir(tmp_path / "beir", ["q1\td1\t1"])
    with open(folder / "queries.jsonl", "a", encoding="utf-8") as handle:
        handle.write("{broken\n")
    with pytest.raises(ValueError, match=r"queries\.jsonl line 4 is not valid JSON"):
        load_beir(folder)


def _generated_pool(az_mirage, tmp_path, n_queries=12):
    entries = json.loads(az_mirage.read_text(encoding="utf-8"))[:n_queries]
    rng = random.Random(0)
    pool = [{"doc_chunk": e["answer"][0], "mapped_id": e["query_id"], "support": 1} for e in entries]
    pool += [{"doc_chunk": e["doc_name"], "mapped_id": e["query_id"], "support": 0} for e in entries]
    rng.shuffle(pool)
    dataset_path, pool_path = tmp_path / "dataset.json", tmp_path / "doc_pool.json"
    dataset_path.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    pool_path.write_text(json.dumps(pool, ensure_ascii=False), encoding="utf-8")
    return dataset_path, pool_path


def test_az_mirage_relevance_is_mapped_id_with_support_1(az_mirage, tmp_path):
    if az_mirage is None:
        pytest.skip("../shared/data/az-mirage/dataset.json is not beside the checkout")
    data = load_az_mirage(*_generated_pool(az_mirage, tmp_path))
    assert len(data.queries) == 12 and len(data.corpus) == 24
    assert all(len(judged) == 1 for judged in data.qrels.values())


def test_cli_evaluates_two_models_side_by_side_on_real_az_mirage_questions(az_mirage, converted, tmp_path, capsys):
    if az_mirage is None:
        pytest.skip("../shared/data/az-mirage/dataset.json is not beside the checkout")
    dataset, pool = _generated_pool(az_mirage, tmp_path)
    models = [str(converted["wordpiece"][0]), str(converted["metaspace"][0])]
    code = main(
        [
            "evaluate",
            "--protocol",
            "az-mirage",
            "--data",
            str(dataset),
            "--pool",
            str(pool),
            "--run-dir",
            str(tmp_path / "runs"),
            "--json",
            *models,
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == set(models)
    assert all(
        entry["evaluated"] == 12 and set(entry["metrics"]["all"]) == set(RETRIEVAL_METRICS) for entry in report.values()
    )
    trec = sorted((tmp_path / "runs").glob("*.trec"))
    assert len(trec) == 2 and trec[0].read_text().split("\n")[0].split()[1] == "Q0"
    caches = sorted((tmp_path / "runs" / "encodings").iterdir())  # one document encoding per model, complete
    assert len(caches) == 2 and all((cache / "manifest.json").is_file() for cache in caches)


def test_cli_triplets_protocol_prints_a_markdown_table(converted, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"query": "bakı", "positive": "bakı paytaxt", "negatives": ["nizami"], "source": "books"}) + "\n",
        encoding="utf-8",
    )
    assert main(["evaluate", "--protocol", "triplets", "--data", str(rows), str(converted["wordpiece"][0])]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| model | group | R@1 | R@3 | MRR@10 | NDCG@10 | queries | skipped |"
    assert [line.split(" | ")[1] for line in lines[2:]] == ["books", "macro"]


def test_cli_az_mirage_without_pool_exits_2(tmp_path, capsys):
    assert main(["evaluate", "--protocol", "az-mirage", "--data", str(tmp_path / "x.json"), "m"]) == 2
    assert "needs --pool" in capsys.readouterr().err


def test_cli_beir_protocol_prints_a_markdown_row_per_model(converted, tmp_path, capsys):
    folder = _write_beir(tmp_path / "beir", ["q1\td1\t1", "q2\td2\t1"])
    code = main(
        ["evaluate", "--protocol", "beir", "--data", str(folder), "--run-dir", "", str(converted["wordpiece"][0])]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| model | group | P@1 | R@5 | R@10 | NDCG@5 | NDCG@10 | MRR@10 | F1@10 |")
    assert len(lines) == 3 and lines[2].endswith("| 2 | 0 |")


def test_cli_gives_each_model_its_own_run_file_when_folder_names_are_the_same(converted, tmp_path, capsys):
    import shutil

    folder = _write_beir(tmp_path / "beir", ["q1\td1\t1", "q2\td2\t1"])
    models = []
    for parent, family in (("r1", "wordpiece"), ("r2", "metaspace")):
        models.append(str(shutil.copytree(converted[family][0], tmp_path / parent / "model")))
    runs = tmp_path / "runs"
    code = main(["evaluate", "--protocol", "beir", "--data", str(folder), "--run-dir", str(runs), "--json", *models])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    files = ["r1-model.beir.trec", "r2-model.beir.trec"]
    assert sorted(p.name for p in runs.glob("*.trec")) == files
    assert [report[m]["run_file"] for m in models] == [str(runs / name) for name in files]
    tags = [(runs / name).read_text().split("\n")[0].split()[-1] for name in files]
    assert tags == ["r1-model", "r2-model"]


def test_run_tags_are_distinct_for_any_models():
    from colbert_az_pylate.evaluation.retrieval import run_tags

    names = ["r1/model", "r2/model", "model", "/abs/r1/model", "LocalDoc/colbert-az", "x y/model"]
    tags = run_tags(names)
    assert len(set(tags)) == len(names) and all("/" not in tag and " " not in tag for tag in tags)
    assert run_tags(["a/model", "b/other"]) == ["model", "other"]


def test_cli_refuses_the_same_model_twice(converted, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(converted["wordpiece"][0].parent)
    name = converted["wordpiece"][0].name
    assert main(["evaluate", "--protocol", "beir", "--data", "x", name, f"./{name}"]) == 2
    assert "are the same model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"query": "bakı", "positive": "bakı paytaxt", "negatives": "nizami"}, "line 2: negatives must be a list"),
        ({"query": 123, "negatives": [None, 5]}, "line 2 has no 'positive' column"),
        ({"query": 123, "positive": "p", "negatives": [None, 5]}, "line 2: query must be a text"),
    ],
)
def test_cli_triplets_refuses_a_bad_row_with_its_line_before_loading_a_model(tmp_path, capsys, line, message):
    rows = tmp_path / "rows.jsonl"
    good = {"query": "bakı", "positive": "bakı paytaxt", "negatives": ["nizami"]}
    rows.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n", encoding="utf-8")
    assert main(["evaluate", "--protocol", "triplets", "--data", str(rows), "no-such-model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1] and str(rows) in err[-1]


@pytest.mark.parametrize("damage", ["qrels", "corpus", "missing"])
def test_cli_malformed_beir_data_is_bad_input_exit_2(tmp_path, capsys, damage):
    folder = _write_beir(tmp_path / "beir", ["q1\td1\tx"] if damage == "qrels" else ["q1\td1\t1"])
    if damage == "corpus":
        with open(folder / "corpus.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"_id": "d9", "text": ["not", "a", "text"]}) + "\n")
    data = str(folder if damage != "missing" else tmp_path / "nowhere")
    assert main(["evaluate", "--protocol", "beir", "--data", data, "no-such-model"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")


def test_cli_finds_every_model_before_evaluating_the_first(converted, tmp_path, capsys, monkeypatch):
    import colbert_az_pylate.loading as loading

    beir = _write_beir(tmp_path / "beir", ["q1\tbaku\t1"])
    monkeypatch.setattr(loading, "load", lambda *a, **k: pytest.fail("a model was loaded before all were found"))
    runs = tmp_path / "runs"
    argv = ["evaluate", "--protocol", "beir", "--data", str(beir), "--run-dir", str(runs)]
    assert main([*argv, str(converted["wordpiece"][0]), str(tmp_path / "no-such-model")]) == 2
    assert "no-such-model" in capsys.readouterr().err and not runs.exists()
