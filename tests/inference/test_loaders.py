r"""Every loader ends in one clear error: a checkpoint refused by the safe
loader says so in whole sentences (never "load with weights_only=False"),
an embeddings file with pickled objects is refused without unpickling it,
and a run folder resolves to its *own* checkpoint wherever it was moved
or copied to (the file read is logged)."""
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pinsage_pyg.config import ConfigError
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.inference.embed import load_checkpoint, resolve_checkpoint
from pinsage_pyg.inference.export import load_embeddings, write_embeddings
from pinsage_pyg.inference.recommend import Recommender
from pinsage_pyg.training import checkpointing


class Evil:
    def __reduce__(self):
        return (os.system, ('true', ))


def fake_ckpt(path, hidden):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'hyper_parameters': {'model': {'hidden_channels': hidden}},
                'state_dict': {'model.w': torch.zeros(1)}}, path)


@pytest.fixture
def run_dir(tmp_path):
    r"""A pinsage-train run folder as training leaves it: summary.json
    names the best checkpoint by its absolute path."""
    run = tmp_path / 'runs' / 'original'
    best = run / 'checkpoints' / 'best-epoch=1.ckpt'
    fake_ckpt(best, hidden=16)
    fake_ckpt(run / 'checkpoints' / 'last.ckpt', hidden=17)
    (run / 'summary.json').write_text(json.dumps(
        {'best_checkpoint': str(best.resolve())}))
    return run


def test_copied_run_folder_loads_its_own_checkpoint(run_dir, tmp_path):
    copy = tmp_path / 'elsewhere' / 'copy'
    shutil.copytree(run_dir, copy)
    fake_ckpt(copy / 'checkpoints' / 'best-epoch=1.ckpt', hidden=99)
    assert resolve_checkpoint(copy) == \
        copy / 'checkpoints' / 'best-epoch=1.ckpt'
    assert load_checkpoint(copy)[0] == {'hidden_channels': 99}
    assert load_checkpoint(run_dir)[0] == {'hidden_channels': 16}


def test_moved_run_folder_keeps_working(run_dir, tmp_path):
    moved = tmp_path / 'moved'
    shutil.move(str(run_dir), moved)
    assert resolve_checkpoint(moved) == \
        moved / 'checkpoints' / 'best-epoch=1.ckpt'
    # Without its best checkpoint the folder falls back to its own
    # last.ckpt, never to a file outside it:
    (moved / 'checkpoints' / 'best-epoch=1.ckpt').unlink()
    assert resolve_checkpoint(moved) == moved / 'checkpoints' / 'last.ckpt'


def test_resolved_checkpoint_is_logged(run_dir, caplog):
    with caplog.at_level(logging.INFO, logger='pinsage_pyg'):
        load_checkpoint(run_dir)
    best = (run_dir / 'checkpoints' / 'best-epoch=1.ckpt').resolve()
    assert f'checkpoint: {best}' in caplog.text


def test_bad_summary_json_is_a_clear_error(run_dir):
    (run_dir / 'summary.json').write_text('{not json')
    with pytest.raises(DataError, match='summary.json is not readable JSON'):
        resolve_checkpoint(run_dir)


def assert_whole_refusal(message):
    assert 'posix.system' in message or 'os.system' in message
    assert 'refused' in message
    assert 'weights_only=False' not in message
    assert 'weights_only` set to `False' not in message
    assert '\n' not in message
    assert message.rstrip().endswith('.')


def test_unsafe_checkpoint_refusal_is_whole(tmp_path):
    path = tmp_path / 'evil.ckpt'
    torch.save({'hyper_parameters': {'model': {}}, 'state_dict': {},
                'x': Evil()}, path)
    with pytest.raises(DataError) as e:
        load_checkpoint(path)
    assert_whole_refusal(str(e.value))
    with pytest.raises(ConfigError) as e:
        checkpointing.load_checkpoint(path)
    assert_whole_refusal(str(e.value))
    assert str(e.value).startswith(f'Invalid config: resume={path} is not a '
                                   f'readable checkpoint (it refers to')


def test_numpy_in_checkpoint_names_the_object(tmp_path):
    path = tmp_path / 'np.ckpt'
    torch.save({'state_dict': {}, 'x': np.zeros(3)}, path)
    with pytest.raises(ConfigError, match=r'numpy\S*_reconstruct') as e:
        checkpointing.load_checkpoint(path)
    assert 'add_safe_globals' not in str(e.value)
    assert '\n' not in str(e.value)


@pytest.fixture
def emb_dir(tmp_path):
    emb = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    ids = np.array([f'm{i}' for i in range(6)])
    write_embeddings(tmp_path / 'emb', ids, emb, faiss_index=False)
    return tmp_path / 'emb'


def test_pickled_embeddings_are_refused(emb_dir):
    np.save(emb_dir / 'item_embeddings.npy',
            np.array([Evil()] * 6, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match='holds pickled Python objects') as e:
        load_embeddings(emb_dir)
    assert '\n' not in str(e.value)


@pytest.mark.parametrize('content, match', [
    (np.zeros((5, 4), np.float32), 'has 5 rows but items.parquet lists 6'),
    (np.zeros(6, np.float32), 'not a \\[num_items, dim\\] float matrix'),
    (np.array([['a'] * 4] * 6), 'not a \\[num_items, dim\\] float matrix'),
    (np.full((6, 4), np.nan, np.float32), 'NaN/inf'),
    (b'garbage', 'not a .npy file'),
    (b'\x93NUMPY\x01', 'not a readable .npy file'),
])
def test_malformed_embeddings_are_refused(emb_dir, content, match):
    path = emb_dir / 'item_embeddings.npy'
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    with pytest.raises(DataError, match=match):
        Recommender.from_dir(emb_dir)


def test_broken_items_table_and_index(emb_dir):
    (emb_dir / 'index.faiss').write_bytes(b'not an index')
    with pytest.raises(DataError, match='not a readable faiss index'):
        Recommender.from_dir(emb_dir, index='stored')
    pd.DataFrame({'x': range(6)}).to_parquet(emb_dir / 'items.parquet')
    with pytest.raises(DataError, match='no item_id column'):
        load_embeddings(emb_dir)
    (emb_dir / 'items.parquet').write_bytes(b'junk')
    with pytest.raises(DataError, match='not a readable Parquet table'):
        load_embeddings(emb_dir)


def test_recommend_cli_on_pickled_embeddings_is_one_line(emb_dir, tmp_path):
    np.save(emb_dir / 'item_embeddings.npy',
            np.array([Evil()] * 6, dtype=object), allow_pickle=True)
    exe = Path(sys.executable).parent / 'pinsage-recommend'
    proc = subprocess.run([str(exe), f'embeddings={emb_dir}', 'items=[m1]'],
                          cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith('error: ') and 'pickled' in lines[0]
    assert 'Traceback' not in proc.stdout + proc.stderr
