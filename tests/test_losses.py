"""DistillationInfoNCE against an independent computation of the card's formula, and pylate's Distillation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pylate.losses import Distillation

from colbert_az_pylate import load
from colbert_az_pylate.losses import DistillationInfoNCE

QUERIES = ["bakı paytaxt", "nizami şair"]
DOCUMENTS = [
    "bakı azərbaycanın paytaxtıdır", "nizami gəncəvi", "xəzər dənizi",
    "nizami gəncəvi böyük şairdir", "bakı", "şəki xan sarayı gözəldir və qədimdir",
]  # fmt: skip
TEACHER = torch.tensor([[6.0, 1.0, -2.0], [4.0, 3.5, 0.0]])


@pytest.fixture(scope="module")
def model(converted):
    return load(converted["wordpiece"][0], device="cpu")


def _features(model):
    return [model.tokenize(QUERIES, is_query=True), model.tokenize(DOCUMENTS, is_query=False)]


def _independent_scores(model) -> torch.Tensor:
    queries_features, documents_features = _features(model)
    q = F.normalize(model(queries_features)["token_embeddings"], dim=-1)
    d = F.normalize(model(documents_features)["token_embeddings"], dim=-1)
    mask = documents_features["attention_mask"].float()
    scores = torch.zeros(2, 3)
    for b in range(2):
        for j in range(3):
            doc = 3 * b + j
            similarity = (q[b] @ d[doc].T) * mask[doc]  # pylate zeroes masked document tokens
            scores[b, j] = similarity.max(dim=1).values.sum()
    return scores


def test_default_loss_is_the_cards_formula(model):
    loss = DistillationInfoNCE(model)(_features(model), TEACHER)
    with torch.no_grad():
        s = _independent_scores(model)
    p_teacher = torch.softmax(TEACHER / 1.0, dim=-1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(s, dim=-1))).sum(dim=-1).mean()
    infonce = -torch.log_softmax(s / 0.05, dim=-1)[:, 0].mean()
    assert loss.item() == pytest.approx((0.7 * kl + 0.3 * infonce).item(), rel=1e-4)


def test_alpha_1_equals_pylates_distillation_without_score_normalisation(model):
    ours = DistillationInfoNCE(model, alpha=1.0)(_features(model), TEACHER)
    theirs = Distillation(model, normalize_scores=False)(_features(model), TEACHER)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_student_to_teacher_direction_swaps_the_kl_arguments(model):
    loss = DistillationInfoNCE(model, alpha=1.0, kl_direction="student_to_teacher")(_features(model), TEACHER)
    with torch.no_grad():
        s = _independent_scores(model)
    p_student = torch.softmax(s, dim=-1)
    expected = (p_student * (p_student.log() - torch.log_softmax(TEACHER, dim=-1))).sum(dim=-1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_in_batch_negatives_rank_the_positive_among_every_document(model):
    loss = DistillationInfoNCE(model, alpha=0.0, in_batch_negatives=True)(_features(model), TEACHER)
    queries_features, documents_features = _features(model)
    with torch.no_grad():
        q = F.normalize(model(queries_features)["token_embeddings"], dim=-1)
        d = F.normalize(model(documents_features)["token_embeddings"], dim=-1)
        mask = documents_features["attention_mask"].float()
        s = torch.stack([
            torch.stack([((q[b] @ d[j].T) * mask[j]).max(dim=1).values.sum() for j in range(6)]) for b in range(2)
        ])  # fmt: skip
    expected = F.cross_entropy(s / 0.05, torch.tensor([0, 3]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_loss_backpropagates_into_the_projection(model):
    model.zero_grad()
    DistillationInfoNCE(model)(_features(model), TEACHER).backward()
    assert model[1].linear.weight.grad is not None and model[1].linear.weight.grad.abs().sum() > 0
    model.zero_grad()


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([[1.0, float("nan"), 0.0], [1.0, 0.0, 0.0]]), "NaN or infinite"),
        (torch.tensor([1.0, 2.0]), "shape"),
        (torch.ones(2, 2), "flattened as batch"),
    ],
)
def test_bad_labels_are_refused(model, labels, message):
    with pytest.raises(ValueError, match=message):
        DistillationInfoNCE(model)(_features(model), labels)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"alpha": 1.5}, "alpha"), ({"temperature": 0}, "temperature"), ({"kl_direction": "x"}, "kl_direction")],
)
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistillationInfoNCE(object(), **kwargs)
