"""Peak memory of a training step: bytes saved for backward (any device) and the CUDA allocator's peak."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

__all__ = ["SavedTensorMeter", "peak_memory"]


class SavedTensorMeter:
    """Counts the bytes of tensors saved for backward that are alive, and their peak.

    Activations saved for backward dominate a training step's memory; counting them works on
    every device, including the CPU where no allocator statistics exist. Tensors saved twice are
    counted twice (an upper bound).

    Example:
        >>> meter = SavedTensorMeter()
        >>> w = torch.ones(4, requires_grad=True)
        >>> with meter:
        ...     loss = (w * torch.ones(4)).sum()
        >>> meter.peak >= 16
        True
    """

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self._hooks: AbstractContextManager[Any] | None = None

    def pack(self, tensor: torch.Tensor) -> Any:
        """Saved-tensor hook: wrap ``tensor`` in a holder that counts its bytes while alive."""
        meter, nbytes = self, tensor.numel() * tensor.element_size()

        class Holder:
            def __init__(self) -> None:
                self.tensor = tensor
                meter.live += nbytes
                meter.peak = max(meter.peak, meter.live)

            def __del__(self) -> None:
                meter.live -= nbytes

        return Holder()

    @staticmethod
    def unpack(holder: Any) -> torch.Tensor:
        """Saved-tensor hook: the tensor back."""
        return holder.tensor

    def hooks(self) -> AbstractContextManager[Any]:
        """The ``torch.autograd.graph.saved_tensors_hooks`` context that feeds this meter."""
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    def __enter__(self) -> SavedTensorMeter:
        self._hooks = self.hooks()
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._hooks is not None
        self._hooks.__exit__(*exc)
        self._hooks = None


def peak_memory(fn: Callable[[], Any], device: torch.device | str = "cpu") -> dict[str, int | None]:
    """Run ``fn`` and report its peak memory above what was allocated before.

    Args:
        fn: the step to measure (forward and backward).
        device: the device it runs on; the CUDA allocator is read only on a CUDA device.

    Returns:
        ``{"saved_bytes": peak bytes saved for backward, "cuda_bytes": the CUDA allocator's peak
        increase (``None`` off CUDA)}``.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with SavedTensorMeter() as meter:
        fn()
    cuda_bytes = None
    if cuda:
        torch.cuda.synchronize(device)
        cuda_bytes = torch.cuda.max_memory_allocated(device) - base
    return {"saved_bytes": meter.peak, "cuda_bytes": cuda_bytes}
