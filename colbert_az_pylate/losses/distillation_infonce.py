"""The model card's loss: ``α · KL(teacher → student) + (1 − α) · InfoNCE`` over MaxSim scores."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from colbert_az_pylate.errors import InvalidArgumentError
from colbert_az_pylate.scores import PADDING_MODES, reduce_maxsim


def group_maxsim_scores(
    queries: torch.Tensor,
    documents: torch.Tensor,
    documents_mask: torch.Tensor | None = None,
    queries_mask: torch.Tensor | None = None,
    padding: Literal["exclude", "zero"] = "exclude",
) -> torch.Tensor:
    """MaxSim of each query against its own group of documents, differentiable, for any padding.

    With ``padding="exclude"`` (default) a masked document token is never a query token's best match, so the score
    of a padded document is its MaxSim alone, as the model card's ``maxsim_score`` and
    :func:`colbert_az_pylate.scores.maxsim_scores` compute it. ``padding="zero"`` is pylate's
    ``colbert_kd_scores``: masked similarities are multiplied by 0, so a query token's best similarity is floored
    at 0 on any padded document.

    Parameters
    ----------
    queries
        Query token vectors, shape (batch, query_tokens, dim).
    documents
        Document token vectors grouped per query, shape (batch, group, document_tokens, dim).
    documents_mask
        (batch, group, document_tokens), true where a document token counts; default: every token.
    queries_mask
        (batch, query_tokens), true where a query token counts; default: every token (query expansion).
    padding
        ``"exclude"`` (the card's MaxSim) or ``"zero"`` (pylate's training scores).

    Returns
    -------
    torch.Tensor
        Scores of shape (batch, group). A document with no token left scores 0.

    Examples
    --------
    >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    >>> d = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[-0.6, -0.8], [0.0, 0.0]]]])
    >>> mask = torch.tensor([[[True, False], [True, False]]])
    >>> group_maxsim_scores(q, d, mask)
    tensor([[ 1.0000, -1.4000]])
    >>> group_maxsim_scores(q, d, mask, padding="zero")
    tensor([[1., 0.]])
    """
    return reduce_maxsim(torch.einsum("bqd,bgnd->bgqn", queries, documents), documents_mask, queries_mask, padding)


def all_pairs_maxsim_scores(
    queries: torch.Tensor,
    documents: torch.Tensor,
    documents_mask: torch.Tensor | None = None,
    queries_mask: torch.Tensor | None = None,
    padding: Literal["exclude", "zero"] = "exclude",
) -> torch.Tensor:
    """MaxSim of every query against every document (in-batch negatives), differentiable, for any padding.

    Parameters
    ----------
    queries
        Query token vectors, shape (n_queries, query_tokens, dim).
    documents
        Document token vectors, shape (n_documents, document_tokens, dim).
    documents_mask
        (n_documents, document_tokens), true where a document token counts; default: every token.
    queries_mask
        (n_queries, query_tokens), true where a query token counts; default: every token.
    padding
        ``"exclude"`` (the card's MaxSim) or ``"zero"`` (pylate's ``colbert_scores``).

    Returns
    -------
    torch.Tensor
        Scores of shape (n_queries, n_documents).

    Examples
    --------
    >>> q = torch.tensor([[[1.0, 0.0]], [[0.0, -1.0]]])
    >>> d = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [9.0, 9.0]]])
    >>> all_pairs_maxsim_scores(q, d, torch.tensor([[True, True], [True, False]]))
    tensor([[ 1.0000,  0.6000],
            [ 0.0000, -0.8000]])
    """
    similarity = torch.einsum("aqd,bnd->abqn", queries, documents)
    return reduce_maxsim(similarity, None if documents_mask is None else documents_mask[None], queries_mask, padding)


def distillation_infonce_loss(
    scores: torch.Tensor,
    teacher_scores: torch.Tensor,
    alpha: float = 0.7,
    temperature: float = 0.05,
    teacher_temperature: float = 1.0,
    kl_direction: Literal["teacher_to_student", "student_to_teacher"] = "teacher_to_student",
    student_kl_temperature: float | None = None,
    contrastive_scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """``α · KL + (1 − α) · InfoNCE`` from student scores and teacher scores (see :class:`DistillationInfoNCE`).

    Parameters
    ----------
    scores
        Student scores (batch, 1 + K), the positive first.
    teacher_scores
        Teacher scores, same shape.
    alpha, temperature, teacher_temperature, kl_direction, student_kl_temperature
        As in :class:`DistillationInfoNCE`.
    contrastive_scores
        If given, (batch, batch × (1 + K)) scores for InfoNCE against every document of the batch (in-batch
        negatives); query ``i``'s positive is document ``i × (1 + K)``.

    Returns
    -------
    torch.Tensor
        The scalar loss.

    Examples
    --------
    >>> student = torch.tensor([[2.0, 1.0, 0.0]])
    >>> abs(distillation_infonce_loss(student, torch.tensor([[2.0, 1.0, 0.0]]), alpha=1.0).item()) < 1e-6
    True
    >>> round(distillation_infonce_loss(student, student, alpha=0.0, temperature=1.0).item(), 4)
    0.4076
    """
    teacher = teacher_scores.to(scores.dtype) / teacher_temperature
    student_kl = scores if student_kl_temperature is None else scores / student_kl_temperature
    if kl_direction == "teacher_to_student":
        kl = F.kl_div(F.log_softmax(student_kl, dim=-1), F.softmax(teacher, dim=-1), reduction="batchmean")
    else:
        kl = F.kl_div(F.log_softmax(teacher, dim=-1), F.softmax(student_kl, dim=-1), reduction="batchmean")
    if contrastive_scores is None:
        logits = scores / temperature
        target = torch.zeros(scores.size(0), dtype=torch.long, device=scores.device)
    else:
        logits = contrastive_scores / temperature
        target = torch.arange(scores.size(0), device=scores.device) * scores.size(1)
    return alpha * kl + (1.0 - alpha) * F.cross_entropy(logits, target)


class DistillationInfoNCE(nn.Module):
    """KL distillation from teacher scores plus InfoNCE on the positive, as in the colbert-az card.

    ``L = α · KL + (1 − α) · InfoNCE`` where, with ``s`` the student MaxSim sums over ``[pos, neg_1 … neg_K]`` and
    ``t`` the teacher scores:

    - ``KL = kl_div(log_softmax(s), softmax(t / teacher_temperature), reduction="batchmean")`` — the card's
      ``KL(softmax(student) ‖ softmax(teacher))`` in the argument order of torch's ``kl_div``, i.e. the usual
      teacher → student direction that pylate's ``Distillation`` uses too;
    - ``InfoNCE = cross_entropy(s / temperature, positive)``, the positive being the first document of a group.

    ``s`` is the card's MaxSim for any padding: a padded document token is never a query token's best match
    (``padding="exclude"``). pylate's own losses multiply padded similarities by 0 instead, which floors a query
    token's best similarity at 0 on every padded document; ``padding="zero"`` reproduces that. Where the card is
    ambiguous the choice is a parameter; the defaults are the literal reading above.

    Parameters
    ----------
    model
        A pylate ``ColBERT`` (possibly wrapped by DDP).
    alpha
        Weight of the KL term, in [0, 1] (card: 0.7).
    temperature
        Contrastive temperature of InfoNCE, > 0 (card: 0.05).
    teacher_temperature
        Temperature of the teacher softmax, > 0 (card: 1.0).
    kl_direction
        ``"teacher_to_student"`` (default, as above) or ``"student_to_teacher"``
        (``kl_div(log_softmax(t / T), softmax(s))``).
    student_kl_temperature
        If set, the student scores in the KL term are divided by it (default: unscaled).
    normalize_by_query_length
        Divide MaxSim sums by the number of query tokens (default: raw sums).
    in_batch_negatives
        InfoNCE also against every other query's documents in the batch (default: only its own group).
    padding
        ``"exclude"`` (default: the card's MaxSim) or ``"zero"`` (pylate's ``colbert_kd_scores``).

    Inputs
    ------
    ``sentence_features = [queries, documents]``: tokenized queries (batch) and documents flattened as
    batch × (1 + K), the positive first in each group. ``labels``: teacher scores, shape (batch, 1 + K).

    Examples
    --------
    >>> loss = DistillationInfoNCE(model=None, alpha=0.5)
    >>> student = torch.tensor([[3.0, 1.0, 0.5]])
    >>> round(loss.from_scores(student, torch.tensor([[5.0, 1.0, 0.0]])).item(), 4)
    0.0599

    On a pylate ``ColBERT`` (from :func:`colbert_az_pylate.load`), in the trainer or by hand:

    >>> model = load("./colbert-az-pylate")  # doctest: +SKIP
    >>> q = model.tokenize(["sual"], is_query=True)  # doctest: +SKIP
    >>> d = model.tokenize(["müsbət", "mənfi"], is_query=False)  # doctest: +SKIP
    >>> DistillationInfoNCE(model)([q, d], torch.tensor([[5.0, 1.0]]))  # doctest: +SKIP
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
        padding: Literal["exclude", "zero"] = "exclude",
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise InvalidArgumentError(f"alpha must lie in [0, 1], got {alpha}")
        for name, value in (("temperature", temperature), ("teacher_temperature", teacher_temperature)):
            if not value > 0:
                raise InvalidArgumentError(f"{name} must be positive, got {value}")
        if student_kl_temperature is not None and not student_kl_temperature > 0:
            raise InvalidArgumentError(f"student_kl_temperature must be positive, got {student_kl_temperature}")
        if kl_direction not in ("teacher_to_student", "student_to_teacher"):
            raise InvalidArgumentError(
                f"kl_direction must be 'teacher_to_student' or 'student_to_teacher', got {kl_direction!r}"
            )
        if padding not in PADDING_MODES:
            raise InvalidArgumentError(f"padding must be 'exclude' (the card's MaxSim) or 'zero', got {padding!r}")
        self.model = model
        self.alpha = alpha
        self.temperature = temperature
        self.teacher_temperature = teacher_temperature
        self.kl_direction = kl_direction
        self.student_kl_temperature = student_kl_temperature
        self.normalize_by_query_length = normalize_by_query_length
        self.in_batch_negatives = in_batch_negatives
        self.padding = padding

    @property
    def colbert(self):
        """The pylate model, unwrapped from DDP if needed."""
        return getattr(self.model, "module", self.model)

    def student_scores(
        self, sentence_features: list[dict[str, torch.Tensor]], group_size: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The student's MaxSim scores of a tokenized batch.

        Parameters
        ----------
        sentence_features
            ``[queries, documents]`` as the collator gives them (documents flattened batch × ``group_size``).
        group_size
            1 + K, documents per query.

        Returns
        -------
        tuple
            (batch, 1 + K) scores of each query's own documents, and (batch, batch × (1 + K)) scores against every
            document when ``in_batch_negatives`` is on (else None).
        """
        from pylate.losses.contrastive import extract_skiplist_mask

        queries = F.normalize(self.model(sentence_features[0])["token_embeddings"], p=2, dim=-1)
        documents = F.normalize(self.model(sentence_features[1])["token_embeddings"], p=2, dim=-1)
        masks = extract_skiplist_mask(sentence_features=sentence_features, skiplist=self.colbert.skiplist)
        queries_mask = None if self.colbert.do_query_expansion else masks[0]
        batch = queries.size(0)
        if documents.size(0) != batch * group_size:
            raise InvalidArgumentError(
                f"got {documents.size(0)} documents for {batch} queries and {group_size} teacher scores each; "
                "documents must be flattened as batch × (1 + K), the positive first"
            )
        grouped = documents.view(batch, group_size, *documents.shape[1:])
        grouped_mask = masks[1].view(batch, group_size, -1)
        scores = group_maxsim_scores(queries, grouped, grouped_mask, queries_mask, self.padding)
        all_scores = None
        if self.in_batch_negatives:
            all_scores = all_pairs_maxsim_scores(queries, documents, masks[1], queries_mask, self.padding)
        if self.normalize_by_query_length:
            lengths = (
                masks[0].sum(dim=1, keepdim=True)
                if queries_mask is not None
                else torch.full((batch, 1), queries.size(1), device=queries.device)
            ).clamp(min=1)
            scores = scores / lengths
            all_scores = None if all_scores is None else all_scores / lengths
        return scores, all_scores

    def from_scores(
        self, scores: torch.Tensor, labels: torch.Tensor, contrastive_scores: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The loss from student scores (batch, 1 + K) and teacher scores of the same shape.

        Parameters
        ----------
        scores
            Student scores, the positive first.
        labels
            Teacher scores.
        contrastive_scores
            In-batch scores (batch, batch × (1 + K)), see :func:`distillation_infonce_loss`.

        Returns
        -------
        torch.Tensor
            The scalar loss.
        """
        return distillation_infonce_loss(
            scores,
            labels,
            alpha=self.alpha,
            temperature=self.temperature,
            teacher_temperature=self.teacher_temperature,
            kl_direction=self.kl_direction,
            student_kl_temperature=self.student_kl_temperature,
            contrastive_scores=contrastive_scores,
        )

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor) -> torch.Tensor:
        """The loss of a tokenized batch against its teacher scores ``labels`` (batch, 1 + K)."""
        sentence_features = list(sentence_features)
        if labels.dim() != 2:
            raise InvalidArgumentError(
                f"labels must be teacher scores of shape (batch, 1 + K), got shape {tuple(labels.shape)}"
            )
        if not torch.isfinite(labels).all():
            raise InvalidArgumentError("labels hold NaN or infinite teacher scores; clean or drop those rows")
        scores, all_scores = self.student_scores(sentence_features, labels.size(1))
        return self.from_scores(scores, labels, all_scores)
