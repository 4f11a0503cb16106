"""Training losses with pylate's calling convention."""

from colbert_az_pylate.losses.distillation_infonce import DistillationInfoNCE

__all__ = ["DistillationInfoNCE"]
