r"""Deterministic, dependency-light text features for item titles."""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from itertools import chain, count

import numpy as np

__all__ = ['hash_text_features']

_TOKEN_RE = re.compile(r'\w+')


def hash_text_features(
    texts: Sequence[str],
    num_features: int = 256,
    word_ngrams: tuple[int, int] | None = (1, 2),
    char_ngrams: tuple[int, int] | None = (3, 4),
    seed: int = 0,
) -> np.ndarray:
    r"""Embeds short texts (e.g. item titles) into a fixed-size vector space
    with the hashing trick (`Weinberger et al., 2009
    <https://arxiv.org/abs/0902.2206>`_).

    Each text is lower-cased and split into word tokens (``\w+``). Its
    features are the word n-grams and the character n-grams taken inside each
    word padded with spaces (like scikit-learn's ``analyzer="char_wb"``);
    features are namespaced by kind and word n-gram length before hashing.
    Every distinct feature :math:`f` with count :math:`\mathrm{tf}_f` in a
    text contributes

    .. math::
        x_{h(f)} \mathrel{+}= s(f) \, (1 + \log \mathrm{tf}_f),

    where the column :math:`h(f)` and the sign :math:`s(f) \in \{-1, +1\}`
    come from a salted BLAKE2b hash of :math:`f` (the sign makes collisions
    cancel in expectation). Rows are then :math:`L_2`-normalised. A row
    depends only on its text and the arguments: not on the other texts of the
    batch, nor on the process, run or platform (Python's salted :func:`hash`
    is not used). Missing texts (:obj:`None`, NaN) and texts without word
    characters give zero rows.

    Args:
        texts (Sequence[str]): The texts; :obj:`None`/NaN entries are
            allowed.
        num_features (int, optional): Output dimension.
            (default: :obj:`256`)
        word_ngrams ((int, int), optional): Inclusive range of word n-gram
            lengths, or :obj:`None` for no word features.
            (default: :obj:`(1, 2)`)
        char_ngrams ((int, int), optional): Inclusive range of character
            n-gram lengths, or :obj:`None` for no character features.
            (default: :obj:`(3, 4)`)
        seed (int, optional): Hash salt in :math:`[0, 2^{64})`; different
            seeds give independent hash functions. (default: :obj:`0`)

    Shapes:
        - **output:** :math:`(|\mathcal{T}|, F)` float32, :math:`F` =
          :obj:`num_features`.
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError("hash_text_features: 'texts' must be a sequence of "
                        "strings, not a single string; wrap it in a list.")
    if not _is_int(num_features) or num_features < 1:
        raise ValueError(f"hash_text_features: 'num_features' must be an "
                         f"integer >= 1 (got {num_features!r}).")
    word_range = _check_ngram_range(word_ngrams, 'word_ngrams')
    char_range = _check_ngram_range(char_ngrams, 'char_ngrams')
    if word_range is None and char_range is None:
        raise ValueError("hash_text_features: 'word_ngrams' and "
                         "'char_ngrams' are both None; enable at least one "
                         "of them.")
    if not _is_int(seed) or not 0 <= seed < 2**64:
        raise ValueError(f"hash_text_features: 'seed' must be an integer in "
                         f"[0, 2**64) (got {seed!r}).")
    num_features = int(num_features)
    docs = [_as_text(t, i) for i, t in enumerate(texts)]
    num_docs = len(docs)

    # Tokenise: the only per-text Python work. Everything after runs on
    # flat lists with C-level iteration (map/zip/dict) or in numpy.
    doc_tokens = [_TOKEN_RE.findall(doc.lower()) for doc in docs]
    doc_len = np.fromiter(map(len, doc_tokens), dtype=np.int64, count=num_docs)
    tokens = list(chain.from_iterable(doc_tokens))
    token_row = np.repeat(np.arange(num_docs, dtype=np.int64), doc_len)
    # Position of each token inside its text, and the text's token count.
    token_pos = np.arange(len(tokens), dtype=np.int64)
    token_pos -= np.repeat(np.cumsum(doc_len) - doc_len, doc_len)
    token_doc_len = doc_len[token_row]

    # Every distinct feature gets an id in first-seen order (deterministic);
    # `keys` holds the strings that are hashed, namespaced by feature kind.
    # Each feature kind contributes (rows, ids) occurrence arrays; ids are
    # offset into the shared key space once all vocabularies are known.
    keys: list[str] = []
    segments: list[tuple[np.ndarray, np.ndarray, int]] = []  # rows,ids,offset
    word_uniq, word_id = _factorize(tokens)
    if word_range is not None:
        lo, hi = word_range
        for n in range(lo, hi + 1):
            if n == 1:
                segments.append((token_row, word_id, len(keys)))
                keys.extend(f'w1\x00{g}' for g in word_uniq)
                continue
            # n-grams over the flat token list, then drop the ones that cross
            # a text boundary.
            grams = list(map(' '.join, zip(*(tokens[k:] for k in range(n)))))
            m = len(grams)
            starts = np.flatnonzero(token_pos[:m] + n <= token_doc_len[:m])
            uniq, ids = _factorize(grams)
            segments.append((token_row[starts], ids[starts], len(keys)))
            keys.extend(f'w{n}\x00{g}' for g in uniq)
    if char_range is not None and word_uniq:
        # Character n-grams of each distinct word once, as a CSR table
        # word -> gram ids; then expanded per token occurrence in numpy.
        lo, hi = char_range
        word_grams = [_char_wb_ngrams(w, lo, hi) for w in word_uniq]
        ptr = np.zeros(len(word_uniq) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, word_grams), dtype=np.int64,
                              count=len(word_uniq)), out=ptr[1:])
        uniq, gram_id = _factorize(list(chain.from_iterable(word_grams)))
        counts = ptr[word_id + 1] - ptr[word_id]
        gram_occ = gram_id[_concat_ranges(ptr[word_id], counts)]
        segments.append((np.repeat(token_row, counts), gram_occ, len(keys)))
        keys.extend(f'c\x00{g}' for g in uniq)

    out = np.zeros((num_docs, num_features), dtype=np.float32)
    total = sum(len(ids) for _, ids, _ in segments)
    if total == 0:
        return out

    # Hash every distinct feature string once.
    salt = int(seed).to_bytes(8, 'little')
    digests = b''.join(
        hashlib.blake2b(k.encode('utf-8'), digest_size=8, salt=salt).digest()
        for k in keys)
    h = np.frombuffer(digests, dtype='<u8')
    col_of = (h % np.uint64(num_features)).astype(np.int64)
    sign_of = np.where((h >> np.uint64(63)) == 1, -1.0, 1.0)

    # Sublinear term frequency per (row, feature): sort the occurrence
    # keys row * num_keys + id and count runs. The sort also orders the pairs
    # by row, so buckets are summed one block of rows at a time with a dense
    # bincount (linear time, bounded memory).
    num_keys = len(keys)
    pair = np.empty(total, dtype=np.int64)
    pos = 0
    for seg_rows, seg_ids, offset in segments:
        seg = pair[pos:pos + len(seg_ids)]
        np.multiply(seg_rows, num_keys, out=seg)
        seg += seg_ids
        seg += offset
        pos += len(seg_ids)
    del segments
    pair.sort()
    run_start = np.flatnonzero(np.concatenate(([True],
                                               pair[1:] != pair[:-1])))
    tf = np.diff(run_start, append=total)
    pair = pair[run_start]
    pair_row = pair // num_keys
    pair_feat = pair - pair_row * num_keys
    value = sign_of[pair_feat] * (1.0 + np.log(tf))
    cell = pair_row * num_features + col_of[pair_feat]
    block = max(1, (1 << 20) // num_features)
    starts = np.arange(0, num_docs, block)
    bounds = np.searchsorted(pair_row, np.append(starts, num_docs)).tolist()
    for b, first in enumerate(starts.tolist()):
        last = min(first + block, num_docs)
        lo, hi = bounds[b], bounds[b + 1]
        dense = np.bincount(cell[lo:hi] - first * num_features,
                            weights=value[lo:hi],
                            minlength=(last - first) * num_features)
        dense = dense.reshape(last - first, num_features)
        norm = np.sqrt(np.einsum('ij,ij->i', dense, dense))[:, None]
        np.divide(dense, norm, out=dense, where=norm > 0)
        out[first:last] = dense
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_ngram_range(value: tuple[int, int] | None,
                       name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(_is_int(v) for v in value))
    if not ok or not 1 <= value[0] <= value[1]:
        raise ValueError(f'hash_text_features: {name!r} must be a pair '
                         f'(min_n, max_n) of integers with 1 <= min_n <= '
                         f'max_n, or None (got {value!r}).')
    return int(value[0]), int(value[1])


def _as_text(value: object, index: int) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ''
    try:
        missing = bool(value != value)  # NaN
    except TypeError:  # pandas.NA: its comparisons are ambiguous
        missing = True
    if missing:
        return ''
    raise TypeError(f'hash_text_features: texts[{index}] is a '
                    f'{type(value).__name__} ({value!r}); expected a string '
                    f'or None/NaN. Convert the column with .astype(str) '
                    f'first.')


def _factorize(values: list[str]) -> tuple[list[str], np.ndarray]:
    r"""Distinct values in first-seen order, and each value's index in
    them (C-level iteration only)."""
    index = dict(zip(dict.fromkeys(values), count()))
    ids = np.fromiter(map(index.__getitem__, values), dtype=np.int64,
                      count=len(values))
    return list(index), ids


def _concat_ranges(first: np.ndarray, counts: np.ndarray) -> np.ndarray:
    r"""``concatenate([arange(f, f + c) for f, c in zip(first, counts)])``
    without the Python loop (one cumulative sum)."""
    keep = counts > 0
    first, counts = first[keep], counts[keep]
    if counts.size == 0:
        return np.zeros(0, dtype=np.int64)
    out = np.ones(int(counts.sum()), dtype=np.int64)
    seg_start = np.cumsum(counts) - counts
    out[0] = first[0]
    out[seg_start[1:]] = first[1:] - (first[:-1] + counts[:-1] - 1)
    return np.cumsum(out, out=out)


def _char_wb_ngrams(word: str, min_n: int, max_n: int) -> list[str]:
    r"""Character n-grams of ``" word "`` as scikit-learn's ``char_wb``: a
    padded word not longer than ``n`` yields itself, once."""
    padded = f' {word} '
    size = len(padded)
    grams: list[str] = []
    for n in range(min_n, max_n + 1):
        if size <= n:
            grams.append(padded)
            break
        grams.extend(padded[i:i + n] for i in range(size - n + 1))
    return grams
