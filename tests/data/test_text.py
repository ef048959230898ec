r"""Hashed text features: determinism, the documented formula, similarity and
input validation."""

import hashlib
import math
import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest

import pinsage_pyg.data.text as text_module
from pinsage_pyg.data.text import hash_text_features

TITLES = ['Toy Story', 'GoldenEye', 'Misérables, Les', 'Star Wars',
          'Star Wars: Episode I - The Phantom Menace', 'Titanic', '',
          'the the the', 'Alien 3']


def _reference(text, num_features=256, word_ngrams=(1, 2),
               char_ngrams=(3, 4), seed=0):
    r"""Feature by feature, as documented: lower-cased ``\w+`` words, word
    n-grams, space-padded char n-grams per word (a padded word shorter than
    n counts once), signed BLAKE2b hashing, 1 + log(tf), L2 norm."""
    words = re.findall(r'\w+', text.lower())
    feats = []
    if word_ngrams:
        for n in range(word_ngrams[0], word_ngrams[1] + 1):
            feats += [f'w{n}\x00' + ' '.join(words[i:i + n])
                      for i in range(len(words) - n + 1)]
    if char_ngrams:
        for w in words:
            w = f' {w} '
            for n in range(char_ngrams[0], char_ngrams[1] + 1):
                if len(w) <= n:
                    feats.append('c\x00' + w)
                    break
                feats += ['c\x00' + w[i:i + n]
                          for i in range(len(w) - n + 1)]
    x = np.zeros(num_features)
    for feat, tf in Counter(feats).items():
        h = int.from_bytes(hashlib.blake2b(
            feat.encode(), digest_size=8,
            salt=seed.to_bytes(8, 'little')).digest(), 'little')
        x[h % num_features] += (-1 if h >> 63 else 1) * (1 + math.log(tf))
    norm = np.linalg.norm(x)
    return x / norm if norm > 0 else x


def test_shape_dtype_norm():
    missing = [None, float('nan'), pd.NA, '?!']  # '?!': no word characters
    x = hash_text_features(TITLES + missing)
    assert x.shape == (len(TITLES) + len(missing), 256)
    assert x.dtype == np.float32
    expected = [float(t != '') for t in TITLES] + [0.0] * len(missing)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), expected,
                               atol=1e-6)
    assert hash_text_features([], num_features=8).shape == (0, 8)


@pytest.mark.parametrize('kwargs', [
    {},
    {'num_features': 16, 'seed': 7},
    {'word_ngrams': (1, 3), 'char_ngrams': None},
    {'word_ngrams': None, 'char_ngrams': (2, 5)},
    {'word_ngrams': (2, 2), 'char_ngrams': (1, 1), 'num_features': 3},
])
def test_matches_reference(kwargs):
    x = hash_text_features(TITLES, **kwargs)
    ref = np.stack([_reference(t, **kwargs) for t in TITLES])
    np.testing.assert_allclose(x, ref, atol=1e-6)


def test_rows_do_not_depend_on_the_batch():
    alone = hash_text_features(['Star Wars'])
    batch = hash_text_features(TITLES * 3)
    np.testing.assert_array_equal(batch[3], alone[0])
    np.testing.assert_array_equal(batch[len(TITLES) + 3], alone[0])


def test_deterministic_across_processes():
    x = hash_text_features(TITLES, num_features=64)
    np.testing.assert_array_equal(x, hash_text_features(TITLES,
                                                        num_features=64))
    path = text_module.__file__
    # Load text.py by path in a fresh interpreter with another hash seed
    # (importing the package would pull in torch: slow and irrelevant here).
    code = ('import importlib.util, sys; '
            f'spec = importlib.util.spec_from_file_location("t", {path!r}); '
            'm = importlib.util.module_from_spec(spec); '
            'spec.loader.exec_module(m); '
            f'x = m.hash_text_features({TITLES!r}, num_features=64); '
            'sys.stdout.write(x.tobytes().hex())')
    env = dict(os.environ, PYTHONHASHSEED='12345')
    out = subprocess.run([sys.executable, '-c', code], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert out == x.tobytes().hex()


def test_seed_and_case():
    a = hash_text_features(['Star Wars'], seed=0)
    assert not np.array_equal(a, hash_text_features(['Star Wars'], seed=1))
    np.testing.assert_array_equal(a, hash_text_features(['STAR  wars!']))


def test_similar_titles_are_closer():
    x = hash_text_features(['Star Wars', 'Star Wars: Episode I', 'Titanic',
                            'Toy Story', 'Toy Story 2'])
    cos = x @ x.T
    assert cos[0, 1] > cos[0, 2] + 0.3
    assert cos[3, 4] > cos[3, 2] + 0.3
    assert cos[3, 4] > cos[3, 0]


@pytest.mark.parametrize('kwargs, match', [
    ({'num_features': 0}, 'num_features'),
    ({'num_features': -3}, 'num_features'),
    ({'num_features': 2.5}, 'num_features'),
    ({'word_ngrams': (2, 1)}, 'word_ngrams'),
    ({'word_ngrams': (0, 1)}, 'word_ngrams'),
    ({'char_ngrams': (3,)}, 'char_ngrams'),
    ({'word_ngrams': None, 'char_ngrams': None}, 'at least one'),
    ({'seed': -1}, 'seed'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hash_text_features(['Toy Story'], **kwargs)


def test_bad_texts():
    with pytest.raises(TypeError, match='single string'):
        hash_text_features('Toy Story')
    with pytest.raises(TypeError, match=r'texts\[1\] is a int'):
        hash_text_features(['Toy Story', 42])
