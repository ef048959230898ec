r"""Small helpers shared across the package: CSR pointers and rows (the
sampler, training and evaluation), the temporary files of atomic writes
and safe checkpoint loading."""
from __future__ import annotations

import os
import pickle
import re
import uuid
from pathlib import Path
from typing import Any, Tuple, Union

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


def open_temp_sibling(path: Union[str, os.PathLike]) -> Tuple[int, str]:
    r"""Creates a new, uniquely named temporary file next to :obj:`path`
    (same directory, so that :func:`os.replace` onto :obj:`path` is atomic)
    and returns ``(fd, name)``, open for writing.

    Unlike :func:`tempfile.mkstemp` (always mode ``0600``), the file is
    created like :func:`open` creates files: mode ``0666`` minus the user's
    umask, so the final file is as readable as any other the user writes
    (e.g. ``0644`` under the usual umask ``022``).
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0)
    while True:
        tmp = path.with_name(f'.{path.name}.{uuid.uuid4().hex[:16]}.tmp')
        try:
            return os.open(tmp, flags, 0o666), str(tmp)
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue


_GLOBAL_RE = re.compile(r'GLOBAL ([\w.]+)')


def load_error_reason(error: BaseException) -> str:
    r"""Why ``torch.load(weights_only=True)`` refused or failed to read a
    file, as one whole sentence. torch's own refusal text is a paragraph
    whose first line breaks off mid-sentence and whose advice is to load
    with ``weights_only=False``, i.e. to run the file's code; this names
    the object the file refers to instead, and never suggests that."""
    text = str(error)
    if 'Weights only load failed' in text or (
            isinstance(error, pickle.UnpicklingError) and 'GLOBAL' in text):
        found = _GLOBAL_RE.search(text)
        what = f"the Python object {found.group(1)}" if found else \
            "Python objects"
        return (f"it refers to {what}, which a safe load (tensors and plain "
                f"values only) does not import or run; a checkpoint written "
                f"by pinsage-train holds nothing of the kind, so the file is "
                f"refused")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()),
                 '')
    return f"{type(error).__name__}: {first[:300]}" if first else \
        type(error).__name__


def safe_torch_load(path) -> Any:
    r"""``torch.load(path, map_location='cpu', weights_only=True)``; a
    refused or unreadable file raises :class:`ValueError` with
    :func:`load_error_reason` as its message."""
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError,
            ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError) as e:
        raise ValueError(load_error_reason(e)) from None
