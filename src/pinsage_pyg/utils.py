r"""Small CSR helpers shared by the sampler, training and evaluation."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


def index_to_ptr(index: Tensor, size: int) -> Tensor:
    r"""CSR pointer ``[size + 1]`` of a sorted (or grouped) index vector."""
    ptr = torch.zeros(size + 1, dtype=torch.long, device=index.device)
    ptr[1:] = torch.cumsum(torch.bincount(index, minlength=size), 0)
    return ptr


def gather_csr_rows(ptr: Tensor, rows: Tensor) -> Tuple[Tensor, Tensor]:
    r"""The rows :obj:`rows` of a CSR matrix: the pointer of the selected
    sub-matrix and the positions of its entries in the original column /
    value arrays (vectorised, no loop over rows)."""
    start, count = ptr[rows], ptr[rows + 1] - ptr[rows]
    sub_ptr = torch.zeros(rows.numel() + 1, dtype=torch.long,
                          device=ptr.device)
    sub_ptr[1:] = torch.cumsum(count, 0)
    pos = torch.arange(int(sub_ptr[-1]), device=ptr.device)
    pos = pos + (start - sub_ptr[:-1]).repeat_interleave(count)
    return sub_ptr, pos
