"""DistillationInfoNCE against an independent computation of the card's formula, and pylate's Distillation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pylate.losses import Distillation

from colbert_az_pylate import load
from colbert_az_pylate.errors import InvalidArgumentError
from colbert_az_pylate.losses import DistillationInfoNCE
from colbert_az_pylate.scores import maxsim_scores

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
    """The card's MaxSim, each document's real tokens only."""
    queries_features, documents_features = _features(model)
    q = F.normalize(model(queries_features)["token_embeddings"], dim=-1)
    d = F.normalize(model(documents_features)["token_embeddings"], dim=-1)
    mask = documents_features["attention_mask"].bool()
    scores = torch.zeros(2, 3)
    for b in range(2):
        for j in range(3):
            doc = 3 * b + j
            scores[b, j] = (q[b] @ d[doc][mask[doc]].T).max(dim=1).values.sum()
    return scores


def test_default_loss_is_the_cards_formula(model):
    loss = DistillationInfoNCE(model)(_features(model), TEACHER)
    with torch.no_grad():
        s = _independent_scores(model)
    p_teacher = torch.softmax(TEACHER / 1.0, dim=-1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(s, dim=-1))).sum(dim=-1).mean()
    infonce = -torch.log_softmax(s / 0.05, dim=-1)[:, 0].mean()
    assert loss.item() == pytest.approx((0.7 * kl + 0.3 * infonce).item(), rel=1e-4)


def test_alpha_1_with_zero_padding_equals_pylates_distillation_without_score_normalisation(model):
    ours = DistillationInfoNCE(model, alpha=1.0, padding="zero")(_features(model), TEACHER)
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
        mask = documents_features["attention_mask"].bool()
        s = torch.stack([
            torch.stack([(q[b] @ d[j][mask[j]].T).max(dim=1).values.sum() for j in range(6)]) for b in range(2)
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
    with pytest.raises(InvalidArgumentError, match=message):
        DistillationInfoNCE(model)(_features(model), labels)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 1.5}, "alpha"),
        ({"temperature": 0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"student_kl_temperature": 0}, "student_kl_temperature"),
        ({"kl_direction": "x"}, "kl_direction"),
        ({"padding": "mask"}, "padding"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        DistillationInfoNCE(object(), **kwargs)


LONG = " ".join(["Azərbaycan Respublikasının paytaxtı Bakı şəhəridir və Xəzər dənizinin sahilində yerləşir."] * 6)
PADDING_QUERIES = ["bakı paytaxt", "xəzər dənizi sahili"]
PADDING_DOCUMENTS = ["bakı", LONG, "x", "dəniz", "şəki", LONG[:200]]  # groups of 3, from 3 to 100+ tokens


@pytest.fixture(scope="module")
def centred(model, checkpoints):
    """The model and the card's reference with the mean hidden direction projected out of the projection.

    The tiny random backbone's vectors share one dominant direction, so every similarity is positive and padding
    could not matter; without it some query tokens have only negative similarities to a short document's tokens.
    """
    import copy

    from colbert_az_pylate.reference import ReferenceColBERT  # after load: see the package's import order

    centred = copy.deepcopy(model)
    with torch.no_grad():
        hidden = centred[0](model.tokenize(PADDING_DOCUMENTS, is_query=False))["token_embeddings"]
        mean = F.normalize(hidden.reshape(-1, hidden.size(-1)).mean(dim=0), dim=0)
        weight = centred[1].linear.weight
        weight.copy_(weight - weight @ mean[:, None] * mean[None, :])
    reference = ReferenceColBERT.from_pretrained(checkpoints["wordpiece"])
    with torch.no_grad():
        reference.projection.weight.copy_(weight)
    return centred, reference


def _padding_features(model):
    return [model.tokenize(PADDING_QUERIES, is_query=True), model.tokenize(PADDING_DOCUMENTS, is_query=False)]


def test_student_scores_are_the_cards_maxsim_on_documents_of_very_different_lengths(centred):
    """A 3-token document padded to 100+ tokens scores exactly its own MaxSim, as the card's code computes it."""
    model, reference = centred
    features = _padding_features(model)
    lengths = features[1]["attention_mask"].sum(dim=1)
    assert lengths.max() > 10 * lengths.min()
    with torch.no_grad():
        ours, _ = DistillationInfoNCE(model).student_scores(features, group_size=3)
        pylates, _ = DistillationInfoNCE(model, padding="zero").student_scores(features, group_size=3)
        q = F.normalize(model(features[0])["token_embeddings"], dim=-1)
        d = F.normalize(model(features[1])["token_embeddings"], dim=-1)
    mask = features[1]["attention_mask"]
    own = torch.stack([maxsim_scores(q[b : b + 1], d[3 * b : 3 * b + 3], mask[3 * b : 3 * b + 3])[0] for b in range(2)])
    card = reference.score(PADDING_QUERIES, PADDING_DOCUMENTS)
    card = torch.stack([card[b, 3 * b : 3 * b + 3] for b in range(2)])
    assert torch.allclose(ours, own, atol=1e-5)
    assert torch.allclose(ours, card, rtol=1e-4, atol=1e-4)
    # the data bites: pylate's zero floor lifts the scores of the padded documents above the card's
    assert (pylates - card).max() > 0.05


def test_in_batch_scores_are_the_cards_maxsim_for_every_pair(centred):
    model, reference = centred
    features = _padding_features(model)
    with torch.no_grad():
        _, every = DistillationInfoNCE(model, in_batch_negatives=True).student_scores(features, group_size=3)
        _, pylates = DistillationInfoNCE(model, in_batch_negatives=True, padding="zero").student_scores(features, 3)
    card = reference.score(PADDING_QUERIES, PADDING_DOCUMENTS)
    assert torch.allclose(every, card, rtol=1e-4, atol=1e-4)
    assert (pylates - card).max() > 0.05
