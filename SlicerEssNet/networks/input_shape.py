"""The one shape rule the fully convolutional networks share: H and W must divide by their total stride."""
from __future__ import annotations

from ..errors import InputImageError


def check_spatial_multiple(x, multiple: int, network: str) -> None:
    """Refuse (N, C, H, W) batches whose H or W would not come back at their own size.

    A stride-2 stack silently rounds odd sizes, so the output would no longer line up with the input pixels;
    the slice grid pads to ``multiple_of`` for exactly this reason.
    """
    if x.dim() != 4:
        raise InputImageError(
            f"{network} takes a batch shaped (N, C, H, W), got {tuple(x.shape)}: add the batch and channel axes")
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise InputImageError(
            f"{network} needs H and W that are multiples of {multiple}, got {height}x{width}: pad the slices "
            f"(the model card's grid multiple_of does this)")
