"""Reading numbers off an accelerator without waiting for it once per number.

``float(tensor)`` (or ``.item()``) on a CUDA tensor waits until the device has computed it: a host-device
synchronisation that stalls the queue of work the host has sent ahead. The trainer keeps its loss components
on the device between logs and reads them here, all at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["read_floats"]


def read_floats(values: Sequence[Any]) -> list[float | None]:
    """``values`` (0-d tensors, numbers or None) as floats, None kept; the tensors are read from the device
    together, in one host-device synchronisation (``float`` on each would wait once for each). They are read
    as float64 (float32 on Apple's MPS, which has no float64), so integer counts up to 2**53 and float32 or
    float64 sums are read exactly.

    Args:
        values: 0-d (or one-element) tensors, Python numbers or None, in any mix.

    Returns:
        One float (or None) per value, in order.

    Examples:
        >>> import torch
        >>> read_floats([torch.tensor(0.5), None, 2, torch.tensor(1.25, dtype=torch.float64)])
        [0.5, None, 2.0, 1.25]
        >>> read_floats([torch.tensor(16777217), torch.tensor(0.5, dtype=torch.bfloat16)])
        [16777217.0, 0.5]
    """
    import torch

    tensors = [value for value in values if isinstance(value, torch.Tensor)]
    read: list[float] = []
    if tensors:
        device = tensors[0].device
        dtype = torch.float32 if device.type == "mps" else torch.float64
        read = torch.stack([value.detach().reshape(()).to(device, dtype) for value in tensors]).tolist()
    numbers = iter(read)
    return [
        None if value is None else next(numbers) if isinstance(value, torch.Tensor) else float(value)
        for value in values
    ]
