"""Training losses with pylate's calling convention."""

from colbert_az_pylate.losses.distillation_infonce import (
    DistillationInfoNCE,
    all_pairs_maxsim_scores,
    distillation_infonce_loss,
    group_maxsim_scores,
)

__all__ = ["DistillationInfoNCE", "all_pairs_maxsim_scores", "distillation_infonce_loss", "group_maxsim_scores"]
