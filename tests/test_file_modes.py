r"""Output files are created with the user's umask (like :func:`open`),
not ``tempfile.mkstemp``'s private mode ``0600``: other users of a shared
machine can read metrics, embeddings and checkpoints when the umask lets
them."""
import os
import stat

import numpy as np
import pytest
import torch

from pinsage_pyg.inference.export import atomic_write, save_npy
from pinsage_pyg.training.checkpointing import AtomicCheckpointIO


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_follows_umask(tmp_path, umask):
    path = atomic_write(tmp_path / 'metrics.csv',
                        lambda tmp: open(tmp, 'w').write('a,b\n'))
    assert mode(path) == 0o666 & ~umask
    # The same as a file written with plain open():
    with open(tmp_path / 'plain.txt', 'w') as f:
        f.write('x')
    assert mode(path) == mode(tmp_path / 'plain.txt')


def test_save_npy_follows_umask(tmp_path, umask):
    path = save_npy(tmp_path / 'item_embeddings.npy', np.ones((2, 3)))
    assert mode(path) == 0o666 & ~umask
    np.testing.assert_array_equal(np.load(path), np.ones((2, 3)))


def test_checkpoint_follows_umask(tmp_path, umask):
    path = tmp_path / 'checkpoints' / 'last.ckpt'
    AtomicCheckpointIO().save_checkpoint({'state_dict': {'w': torch.ones(1)}},
                                         path)
    assert mode(path) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ['last.ckpt']


def test_failed_atomic_write_leaves_nothing(tmp_path, umask):
    def boom(tmp):
        open(tmp, 'w').write('partial')
        raise RuntimeError('disk full')
    with pytest.raises(RuntimeError, match='disk full'):
        atomic_write(tmp_path / 'summary.json', boom)
    assert list(tmp_path.iterdir()) == []
