r"""Out-of-core, resumable layer-wise embedding."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import NodeLoader

from pinsage_pyg.inference.layerwise import (WorkDirMismatch,
                                             layerwise_embed,
                                             load_neighborhoods)
from pinsage_pyg.nn import PinSage
from pinsage_pyg.sampler import BipartiteCSR, PinSageSampler, importance_graph

# dense_block: blocks of 8 rows (chunks are whole blocks), so these small
# graphs still have several chunks to resume from.
SAMPLER = dict(num_neighbors=7, num_walks=20, walk_length=2, seed=5,
               dense_block=8)


def small_graph(num_items=120, cold=15, seed=0):
    r"""A random item-user graph whose last :obj:`cold` items have no
    interactions (cold start)."""
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(40, (900, ), generator=g)
    item = torch.randint(num_items - cold, (900, ), generator=g)
    csr = BipartiteCSR.from_edges(user, item, 40, num_items)
    return csr, torch.randn(num_items, 10, generator=g)


@pytest.mark.parametrize('aggr,asymmetric', [('importance', False),
                                             ('importance', True),
                                             ('mean', False),
                                             ('max', False)])
def test_parity_with_minibatch_forward(tmp_path, aggr, asymmetric):
    torch.manual_seed(0)
    csr, x = small_graph()
    model = PinSage(10, 16, 8, num_layers=2, aggr=aggr,
                    asymmetric=asymmetric).eval()
    res = layerwise_embed(model, x, csr, tmp_path, chunk_size=17,
                          walk_chunk_size=50, **SAMPLER)
    query, item = res.load()
    assert item.shape == (120, 8) and item.dtype == np.float32
    assert (res.query_path is not None) == asymmetric
    # The stored neighbourhoods are importance_graph's, edge for edge:
    ref = importance_graph(csr, num_neighbors=7, num_walks=20, seed=5,
                           chunk_size=50)
    ei, ew = load_neighborhoods(tmp_path)
    assert torch.equal(ei, ref.edge_index)
    assert torch.equal(ew, ref.edge_weight)
    # ... and the minibatch forward (Algorithm 2) on them gives the same
    # embedding for every item:
    g = Data(x=x, edge_index=ei, edge_weight=ew, num_nodes=120)
    loader = NodeLoader(g, node_sampler=PinSageSampler(g, 2),
                        input_nodes=torch.arange(120), batch_size=23)
    seen = 0
    for b in loader:
        with torch.no_grad():
            q, i = model(b.x, b.edge_index, b.edge_weight, b.num_sampled_nodes,
                         b.num_sampled_edges)
        seeds = b.n_id[:b.batch_size].numpy()
        assert np.abs(i.numpy() - item[seeds]).max() < 1e-5
        assert np.abs(q.numpy() - query[seeds]).max() < 1e-5
        seen += b.batch_size
    assert seen == 120
    # The in-memory PinSage.inference shares the per-layer code:
    fq, fi = model.inference(x, ei, ew, chunk_size=29)
    assert np.abs(fi.numpy() - item).max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(item, axis=1), 1.0, atol=1e-5)
    # Intermediate layers are removed once consumed:
    assert not list(tmp_path.glob('h*.npy'))
    assert not list(tmp_path.glob('p*.npy'))


def test_cold_start_items_embed_from_features(tmp_path):
    torch.manual_seed(0)
    csr, x = small_graph(cold=15)
    model = PinSage(10, 16, 8).eval()
    _, item = layerwise_embed(model, x, csr, tmp_path, **SAMPLER).load()
    nbr = np.load(tmp_path / 'neighbors.npy')
    assert nbr.dtype == np.int32
    assert (nbr[-15:] == -1).all()  # no interactions, no neighbours
    # A cold item's embedding is the model applied to its features alone:
    empty = torch.empty(2, 0, dtype=torch.long)
    _, alone = model(x[-15:], empty)
    assert np.abs(item[-15:] - alone.detach().numpy()).max() < 1e-5
    assert np.isfinite(item).all()


def test_features_as_memmap_and_resume_is_a_no_op(tmp_path):
    torch.manual_seed(0)
    csr, x = small_graph()
    model = PinSage(10, 16, 8).eval()
    np.save(tmp_path / 'x.npy', x.numpy())
    x_mm = np.load(tmp_path / 'x.npy', mmap_mode='r')
    a = layerwise_embed(model, x, csr, tmp_path / 'a', **SAMPLER)
    b = layerwise_embed(model, x_mm, csr, tmp_path / 'b', **SAMPLER)
    assert a.item_path.read_bytes() == b.item_path.read_bytes()
    again = layerwise_embed(model, x, csr, tmp_path / 'a', **SAMPLER)
    assert again.chunks_computed == 0 and again.chunks_resumed > 0


@pytest.mark.parametrize('budget', [0, None])
def test_gather_from_memory_or_file_and_partial_projection_resume(
        tmp_path, budget):
    # memory_budget=0 gathers the projected rows from the memory-mapped
    # file, the default from RAM: the same bytes either way, also when the
    # projection stage resumes half-way (the resumed rows are read back).
    torch.manual_seed(0)
    csr, x = small_graph()
    model = PinSage(10, 16, 8).eval()
    ref = layerwise_embed(model, x, csr, tmp_path / 'ref', chunk_size=16,
                          **SAMPLER)
    work = tmp_path / 'w'
    run = layerwise_embed(model, x, csr, work, chunk_size=16,
                          keep_intermediate=True, memory_budget=budget,
                          **SAMPLER)
    assert run.item_path.read_bytes() == ref.item_path.read_bytes()
    # Pretend the run died after 3 chunks of the first projection, with a
    # half-written (here: garbage) tail of p1.npy:
    prog = json.loads((work / 'progress.json').read_text())
    prog['done'] = {k: v for k, v in prog['done'].items()
                    if k in ('neighbors', 'encode')}
    prog['done']['project1'] = 3
    (work / 'progress.json').write_text(json.dumps(prog))
    p1 = np.load(work / 'p1.npy', mmap_mode='r+')
    p1[3 * 16:] = 7.0
    p1.flush()
    del p1
    for name in ('h1.npy', 'p2.npy', 'h2.npy', 'item_embeddings.npy'):
        (work / name).unlink()
    again = layerwise_embed(model, x, csr, work, chunk_size=16,
                            memory_budget=budget, **SAMPLER)
    assert again.chunks_resumed == prog['done']['neighbors'] + \
        prog['done']['encode'] + 3
    assert again.item_path.read_bytes() == ref.item_path.read_bytes()


def test_mismatched_work_dir_is_refused(tmp_path):
    torch.manual_seed(0)
    csr, x = small_graph()
    model = PinSage(10, 16, 8).eval()
    layerwise_embed(model, x, csr, tmp_path / 'run', **SAMPLER)
    before = (tmp_path / 'run' / 'item_embeddings.npy').read_bytes()
    other = PinSage(10, 16, 8).eval()  # different weights
    with pytest.raises(WorkDirMismatch, match=r'different run.*model'):
        layerwise_embed(other, x, csr, tmp_path / 'run', **SAMPLER)
    with pytest.raises(WorkDirMismatch, match='sampler'):
        layerwise_embed(model, x, csr, tmp_path / 'run',
                        **{**SAMPLER, 'seed': 6})
    with pytest.raises(WorkDirMismatch, match='features'):
        layerwise_embed(model, x + 1, csr, tmp_path / 'run', **SAMPLER)
    # Nothing of the finished run was touched by the refusals:
    assert (tmp_path / 'run' / 'item_embeddings.npy').read_bytes() == before
    # overwrite=True replaces it:
    res = layerwise_embed(other, x, csr, tmp_path / 'run', overwrite=True,
                          **SAMPLER)
    assert res.chunks_resumed == 0
    # A non-empty directory without a manifest is not ours to fill:
    (tmp_path / 'foreign').mkdir()
    (tmp_path / 'foreign' / 'notes.txt').write_text('mine')
    with pytest.raises(WorkDirMismatch, match='not empty'):
        layerwise_embed(model, x, csr, tmp_path / 'foreign', **SAMPLER)


def test_corrupt_work_dir_and_bad_arguments(tmp_path):
    torch.manual_seed(0)
    csr, x = small_graph()
    model = PinSage(10, 16, 8).eval()
    layerwise_embed(model, x, csr, tmp_path, chunk_size=50, **SAMPLER)
    progress = json.loads((tmp_path / 'progress.json').read_text())
    progress['done']['heads'] = 1  # pretend the last stage was cut short
    (tmp_path / 'progress.json').write_text(json.dumps(progress))
    (tmp_path / 'item_embeddings.npy').unlink()
    with pytest.raises(WorkDirMismatch, match='corrupt.*item_embeddings'):
        layerwise_embed(model, x, csr, tmp_path, chunk_size=50, **SAMPLER)
    with pytest.raises(ValueError, match='features but the model'):
        layerwise_embed(model, x[:, :5], csr, tmp_path / 'b', **SAMPLER)
    with pytest.raises(ValueError, match='rows but the graph'):
        layerwise_embed(model, x[:10], csr, tmp_path / 'b', **SAMPLER)
    with pytest.raises(ValueError, match='chunk_size'):
        layerwise_embed(model, x, csr, tmp_path / 'b', chunk_size=0,
                        **SAMPLER)


def _stage_lines(records):
    return [r.getMessage() for r in records
            if r.name == 'pinsage_pyg.inference.layerwise']


@pytest.mark.parametrize('progress', ['log', 'auto', True])
def test_progress_off_a_terminal_is_one_log_line_per_stage(
        tmp_path, caplog, capsys, monkeypatch, progress):
    # pytest captures stdout (not a terminal): 'auto' logs, as 'log' does.
    import pinsage_pyg.inference.layerwise as lw
    monkeypatch.setattr(lw, 'LOG_INTERVAL_S', float('inf'))
    torch.manual_seed(0)
    csr, x = small_graph()
    model = PinSage(10, 16, 8, num_layers=2).eval()
    caplog.set_level('INFO', logger='pinsage_pyg.inference.layerwise')
    layerwise_embed(model, x, csr, tmp_path, chunk_size=50,
                    progress=progress, **SAMPLER)
    lines = _stage_lines(caplog.records)
    stages = ['neighbors', 'encode', 'project1', 'layer1', 'project2',
              'layer2', 'heads']
    assert lines == [f"[{i + 1}/7] {s}: 120 items in " + ln.split(' in ')[1]
                     for i, (s, ln) in enumerate(zip(stages, lines))]
    assert all(ln.endswith(' items/s)') for ln in lines)
    out = capsys.readouterr()
    assert '\r' not in out.out + out.err  # no bar
    # A resumed run says which stages an earlier run finished:
    caplog.clear()
    layerwise_embed(model, x, csr, tmp_path, chunk_size=50,
                    progress=progress, **SAMPLER)
    assert _stage_lines(caplog.records) == [
        f"[{i + 1}/7] {s}: done in an earlier run (resumed)"
        for i, s in enumerate(stages)]


def test_progress_log_lines_within_a_long_stage(tmp_path, caplog,
                                                monkeypatch):
    import pinsage_pyg.inference.layerwise as lw
    monkeypatch.setattr(lw, 'LOG_INTERVAL_S', 0.0)  # every chunk is "long"
    torch.manual_seed(0)
    csr, x = small_graph()
    model = PinSage(10, 16, 8, num_layers=1).eval()
    caplog.set_level('INFO', logger='pinsage_pyg.inference.layerwise')
    layerwise_embed(model, x, csr, tmp_path, chunk_size=48,
                    walk_chunk_size=60, progress='log', **SAMPLER)
    lines = _stage_lines(caplog.records)
    encode = [ln for ln in lines if ln.startswith('[2/5] encode')]
    # Chunks of 48 of 120 items: two progress lines, then the closing one.
    assert [ln.split(', ')[0] for ln in encode[:2]] == [
        '[2/5] encode: 48 of 120 items (40%)',
        '[2/5] encode: 96 of 120 items (80%)']
    assert all('items/s, about ' in ln and ln.endswith('s left')
               for ln in encode[:2])
    assert encode[2].startswith('[2/5] encode: 120 items in ')
    assert len(encode) == 3
    nbr = [ln for ln in lines if ln.startswith('[1/5] neighbors')]
    assert len(nbr) == 2 and nbr[0].startswith(
        '[1/5] neighbors: 60 of 120 items (50%)')


def test_progress_bar_and_none(tmp_path, caplog, capsys):
    torch.manual_seed(0)
    csr, x = small_graph()
    model = PinSage(10, 16, 8, num_layers=1).eval()
    caplog.set_level('INFO', logger='pinsage_pyg.inference.layerwise')
    layerwise_embed(model, x, csr, tmp_path / 'bar', chunk_size=50,
                    progress='bar', **SAMPLER)
    err = capsys.readouterr().err
    assert 'encode' in err and 'layer1' in err and '\r' in err  # tqdm
    assert _stage_lines(caplog.records) == []
    for quiet in (False, None, 'none'):
        layerwise_embed(model, x, csr, tmp_path / str(quiet), chunk_size=50,
                        progress=quiet, **SAMPLER)
    out = capsys.readouterr()
    assert out.out == out.err == '' and _stage_lines(caplog.records) == []
    with pytest.raises(ValueError, match='progress must be one of'):
        layerwise_embed(model, x, csr, tmp_path / 'x', progress='bars',
                        **SAMPLER)


JOB = textwrap.dedent('''
    import sys, torch
    from pinsage_pyg.inference.layerwise import layerwise_embed
    from pinsage_pyg.nn import PinSage
    from pinsage_pyg.sampler import BipartiteCSR

    def job(work):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # bytes are reproducible per thread count
        g = torch.Generator().manual_seed(0)
        n = 4000
        user = torch.randint(1000, (30000, ), generator=g)
        item = torch.randint(n - 100, (30000, ), generator=g)
        csr = BipartiteCSR.from_edges(user, item, 1000, n)
        x = torch.randn(n, 24, generator=g)
        torch.manual_seed(1)
        model = PinSage(24, 32, 16, asymmetric=True).eval()
        layerwise_embed(model, x, csr, work, num_neighbors=20,
                        num_walks=30, seed=3, chunk_size=64, dense_block=64,
                        walk_chunk_size=500)
        torch.set_num_threads(threads)
''')


def run_script(path: Path, work: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(Path(__file__).parents[2] / 'src'),
         os.environ.get('PYTHONPATH', '')])}
    return subprocess.Popen([sys.executable, str(path), str(work)], env=env,
                            **kw)


@pytest.mark.slow
def test_resume_after_sigkill_is_byte_identical(tmp_path):
    script = tmp_path / 'job.py'
    script.write_text(JOB + '\njob(sys.argv[1])\n')
    full, killed = tmp_path / 'full', tmp_path / 'killed'
    namespace = {}
    exec(JOB, namespace)
    namespace['job'](full)  # the uninterrupted run, in this process

    proc = run_script(script, killed)
    progress = killed / 'progress.json'
    deadline = time.time() + 240
    state = None
    while time.time() < deadline and proc.poll() is None:
        if progress.exists():
            try:
                state = json.loads(progress.read_text())['done']
            except (ValueError, OSError):
                state = None
            # Kill in the middle of the first layer (after the walks):
            if state and state.get('layer1', 0) >= 3:
                break
        time.sleep(0.005)
    assert proc.poll() is None, 'the job finished before it could be killed'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = json.loads(progress.read_text())['done']
    assert 'heads' not in state  # it really stopped half-way

    assert run_script(script, killed).wait(timeout=300) == 0
    for name in ('item_embeddings.npy', 'query_embeddings.npy',
                 'neighbors.npy', 'weights.npy'):
        assert (killed / name).read_bytes() == (full / name).read_bytes(), \
            name


def test_synthetic_graph_is_skewed_and_consistent(tmp_path):
    from pinsage_pyg.data.synthetic import synthetic_graph
    csr, x = synthetic_graph(20000, mean_degree=8, cold_fraction=0.02,
                             num_features=6, seed=1)
    again, x2 = synthetic_graph(20000, mean_degree=8, cold_fraction=0.02,
                                num_features=6, seed=1)
    assert torch.equal(csr.user_items, again.user_items)
    assert torch.equal(x, x2)
    assert csr.num_items == 20000 and csr.num_users == 10000
    assert x.shape == (20000, 6) and x.dtype == torch.float32
    deg = (csr.item_ptr[1:] - csr.item_ptr[:-1]).numpy()
    assert abs((deg == 0).mean() - 0.02) < 0.005  # cold-start items
    warm = deg[deg > 0]
    assert 6 < warm.mean() < 10
    # Heavy tail: the median item is small, the top items are huge.
    assert np.median(warm) <= 3 and warm.max() > 50 * np.median(warm)
    # Both CSR directions hold the same (user, item) multiset:
    item_of = np.repeat(np.arange(20000), deg)
    a = np.sort(csr.item_users.numpy() * 20000 + item_of)
    udeg = (csr.user_ptr[1:] - csr.user_ptr[:-1]).numpy()
    user_of = np.repeat(np.arange(10000), udeg)
    b = np.sort(user_of * 20000 + csr.user_items.numpy())
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match='degree_exponent'):
        synthetic_graph(10, degree_exponent=2.0)
    # It embeds: cold items get finite embeddings from their features.
    model = PinSage(6, 8, 4).eval()
    small, xs = synthetic_graph(3000, num_features=6, seed=2)
    _, emb = layerwise_embed(model, xs, small, tmp_path, num_neighbors=10,
                             num_walks=10, chunk_size=1000).load()
    assert emb.shape == (3000, 4) and np.isfinite(emb).all()


def test_chunk_size_does_not_change_a_byte(tmp_path):
    # A matrix kernel sums in another order for another row count: with
    # the dense maths on the chunk's rows, chunk_size=5 moved embeddings by
    # ~1e-6. The layers now run on fixed, aligned blocks of
    # INFERENCE_BLOCK rows; the catalogue spans several blocks and a
    # partial last one.
    from pinsage_pyg.nn.model import INFERENCE_BLOCK, aligned_chunk_size
    n = 2 * INFERENCE_BLOCK + 300
    g = torch.Generator().manual_seed(3)
    user = torch.randint(400, (20000, ), generator=g)
    item = torch.randint(n - 40, (20000, ), generator=g)
    csr = BipartiteCSR.from_edges(user, item, 400, n)
    x = torch.randn(n, 10, generator=g)
    torch.manual_seed(0)
    model = PinSage(10, 32, 8, num_layers=2, asymmetric=True).eval()
    with torch.no_grad():  # a query side that differs from the item side
        model.query_delta.lin2.weight.normal_()
    files = {}
    for c in (5, 700, INFERENCE_BLOCK, 3000, 10 * INFERENCE_BLOCK):
        res = layerwise_embed(model, x, csr, tmp_path / str(c), chunk_size=c,
                              walk_chunk_size=500, **{
                                  **SAMPLER, 'dense_block': INFERENCE_BLOCK})
        files[c] = (res.item_path.read_bytes(), res.query_path.read_bytes())
        assert json.loads((tmp_path / str(c) / 'manifest.json').read_text(
        ))['chunk_size'] == aligned_chunk_size(c)
    ref = files.pop(5)
    for c, got in files.items():
        assert got == ref, c
    # The in-memory path gives the same bytes for any chunk_size too:
    ei, ew = load_neighborhoods(tmp_path / '5')
    outs = [model.inference(x, ei, ew, chunk_size=c) for c in (1, 1500, n)]
    for q, i in outs[1:]:
        assert torch.equal(q, outs[0][0]) and torch.equal(i, outs[0][1])
    query, item = np.load(tmp_path / '700' / 'query_embeddings.npy'), \
        np.load(tmp_path / '700' / 'item_embeddings.npy')
    assert np.abs(outs[0][1].numpy() - item).max() < 1e-5
    assert np.abs(outs[0][0].numpy() - query).max() < 1e-5
    assert np.abs(query - item).max() > 1e-3  # the sides really differ
