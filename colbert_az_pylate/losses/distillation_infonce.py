"""The model card's loss: ``α · KL(teacher → student) + (1 − α) · InfoNCE`` over MaxSim scores."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from pylate.losses.contrastive import extract_skiplist_mask
from pylate.scores import colbert_kd_scores, colbert_scores
from torch import nn


class DistillationInfoNCE(nn.Module):
    """KL distillation from teacher scores plus InfoNCE on the positive, as in the colbert-az card.

    ``L = α · KL + (1 − α) · InfoNCE`` where, with ``s`` the student MaxSim sums over ``[pos, neg_1 … neg_K]``
    (masks as pylate applies them) and ``t`` the teacher scores:

    - ``KL = kl_div(log_softmax(s), softmax(t / teacher_temperature), reduction="batchmean")`` — the card's
      ``KL(softmax(student) ‖ softmax(teacher))`` in the argument order of torch's ``kl_div``, i.e. the usual
      teacher → student direction that pylate's ``Distillation`` uses too;
    - ``InfoNCE = cross_entropy(s / temperature, positive)``, the positive being the first document of a group.

    Where the card is ambiguous the choice is a parameter; the defaults are the literal reading above.

    Parameters
    ----------
    model
        A pylate ``ColBERT`` (possibly wrapped by DDP).
    alpha
        Weight of the KL term (card: 0.7).
    temperature
        Contrastive temperature of InfoNCE (card: 0.05).
    teacher_temperature
        Temperature of the teacher softmax (card: 1.0).
    kl_direction
        ``"teacher_to_student"`` (default, as above) or ``"student_to_teacher"``
        (``kl_div(log_softmax(t / T), softmax(s))``).
    student_kl_temperature
        If set, the student scores in the KL term are divided by it (default: unscaled).
    normalize_by_query_length
        Divide MaxSim sums by the number of query tokens (default: raw sums).
    in_batch_negatives
        InfoNCE also against every other query's documents in the batch (default: only its own group).

    Inputs
    ------
    ``sentence_features = [queries, documents]``: tokenized queries (batch) and documents flattened as
    batch × (1 + K), the positive first in each group. ``labels``: teacher scores, shape (batch, 1 + K).

    Example
    -------
    >>> from colbert_az_pylate import load
    >>> model = load("./colbert-az-pylate")  # doctest: +SKIP
    >>> loss = DistillationInfoNCE(model)  # doctest: +SKIP
    >>> q = model.tokenize(["sual"], is_query=True)  # doctest: +SKIP
    >>> d = model.tokenize(["müsbət", "mənfi"], is_query=False)  # doctest: +SKIP
    >>> loss([q, d], torch.tensor([[5.0, 1.0]]))  # doctest: +SKIP
    """

    def __init__(
        self,
        model,
        alpha: float = 0.7,
        temperature: float = 0.05,
        teacher_temperature: float = 1.0,
        kl_direction: Literal["teacher_to_student", "student_to_teacher"] = "teacher_to_student",
        student_kl_temperature: float | None = None,
        normalize_by_query_length: bool = False,
        in_batch_negatives: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        for name, value in (("temperature", temperature), ("teacher_temperature", teacher_temperature)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if kl_direction not in ("teacher_to_student", "student_to_teacher"):
            raise ValueError(f"kl_direction must be 'teacher_to_student' or 'student_to_teacher', got {kl_direction!r}")
        self.model = model
        self.alpha = alpha
        self.temperature = temperature
        self.teacher_temperature = teacher_temperature
        self.kl_direction = kl_direction
        self.student_kl_temperature = student_kl_temperature
        self.normalize_by_query_length = normalize_by_query_length
        self.in_batch_negatives = in_batch_negatives

    @property
    def colbert(self):
        """The pylate model, unwrapped from DDP if needed."""
        return getattr(self.model, "module", self.model)

    def student_scores(self, sentence_features: list[dict[str, torch.Tensor]], group_size: int):
        """MaxSim sums (batch, 1 + K), plus (batch, batch × (1 + K)) scores when in-batch negatives are on."""
        queries = F.normalize(self.model(sentence_features[0])["token_embeddings"], p=2, dim=-1)
        documents = F.normalize(self.model(sentence_features[1])["token_embeddings"], p=2, dim=-1)
        masks = extract_skiplist_mask(sentence_features=sentence_features, skiplist=self.colbert.skiplist)
        queries_mask = None if self.colbert.do_query_expansion else masks[0]
        batch = queries.size(0)
        if documents.size(0) != batch * group_size:
            raise ValueError(
                f"got {documents.size(0)} documents for {batch} queries and {group_size} teacher scores each; "
                "documents must be flattened as batch × (1 + K), the positive first"
            )
        grouped = documents.view(batch, group_size, *documents.shape[1:])
        grouped_mask = masks[1].view(batch, group_size, -1)
        scores = colbert_kd_scores(queries, grouped, queries_mask=queries_mask, documents_mask=grouped_mask)
        all_scores = None
        if self.in_batch_negatives:
            all_scores = colbert_scores(queries, documents, queries_mask=queries_mask, documents_mask=masks[1])
        if self.normalize_by_query_length:
            lengths = (
                masks[0].sum(dim=1, keepdim=True)
                if queries_mask is not None
                else torch.full((batch, 1), queries.size(1), device=queries.device)
            ).clamp(min=1)
            scores = scores / lengths
            all_scores = None if all_scores is None else all_scores / lengths
        return scores, all_scores

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor) -> torch.Tensor:
        sentence_features = list(sentence_features)
        if labels.dim() != 2:
            raise ValueError(f"labels must be teacher scores of shape (batch, 1 + K), got shape {tuple(labels.shape)}")
        if not torch.isfinite(labels).all():
            raise ValueError("labels hold NaN or infinite teacher scores; clean or drop those rows")
        scores, all_scores = self.student_scores(sentence_features, labels.size(1))
        teacher = labels.to(scores.dtype) / self.teacher_temperature
        student_kl = scores if self.student_kl_temperature is None else scores / self.student_kl_temperature
        if self.kl_direction == "teacher_to_student":
            kl = F.kl_div(F.log_softmax(student_kl, dim=-1), F.softmax(teacher, dim=-1), reduction="batchmean")
        else:
            kl = F.kl_div(F.log_softmax(teacher, dim=-1), F.softmax(student_kl, dim=-1), reduction="batchmean")
        if all_scores is None:
            logits = scores / self.temperature
            target = torch.zeros(scores.size(0), dtype=torch.long, device=scores.device)
        else:
            logits = all_scores / self.temperature
            target = torch.arange(scores.size(0), device=scores.device) * labels.size(1)
        infonce = F.cross_entropy(logits, target)
        return self.alpha * kl + (1.0 - self.alpha) * infonce
