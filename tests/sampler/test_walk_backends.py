r"""Random-walk backends (``sampler.backend``): every backend walks the same
distribution, restarts included, and ``auto`` / unavailable backends behave.

The reference is exact: with one-step item transition matrix ``P`` (item ->
uniform user -> uniform item) and restart probability ``p`` before every
step after the first, the item after step ``t`` from start ``s`` is
distributed as ``pi_0 = e_s P``, ``pi_t = (p e_s + (1 - p) pi_{t-1}) P``.
Every backend's empirical per-step distribution over many walks must match
it (total variation below 0.03 with 20,000 walks per start; the sampling
noise is ~0.01), and the importance weights of the neighbourhoods built on
it must match those of the plain-PyTorch backend (max abs difference of
the mean weights below 0.02; the noise is ~0.004 per entry)."""
import pytest
import torch

from pinsage_pyg.config import ConfigError, SamplerConfig
from pinsage_pyg.sampler import BipartiteCSR, importance_graph, random_walk
from pinsage_pyg.sampler import walk_backends as wb

BACKENDS = ['torch', 'torch_cluster', 'pyg_lib']
NUM_ITEMS, NUM_USERS = 15, 9


@pytest.fixture
def backend(request, require_ext):
    name = request.param
    if name != 'torch':
        require_ext(name)
    return name


def make_csr(isolated: bool = False) -> BipartiteCSR:
    gen = torch.Generator().manual_seed(3)
    adj = torch.rand(NUM_USERS, NUM_ITEMS, generator=gen) < 0.3
    adj[torch.arange(NUM_ITEMS) % NUM_USERS, torch.arange(NUM_ITEMS)] = True
    if isolated:
        adj[:, -1] = False  # item 14 has no users
    user, item = adj.nonzero().t()
    return BipartiteCSR.from_edges(user, item, NUM_USERS, NUM_ITEMS)


def transition(csr: BipartiteCSR) -> torch.Tensor:
    ip, iu, up, ui = csr.item_ptr, csr.item_users, csr.user_ptr, \
        csr.user_items
    a = torch.zeros(NUM_ITEMS, NUM_USERS, dtype=torch.float64)
    b = torch.zeros(NUM_USERS, NUM_ITEMS, dtype=torch.float64)
    for i in range(NUM_ITEMS):
        for u in iu[ip[i]:ip[i + 1]]:
            a[i, u] += 1 / float(ip[i + 1] - ip[i])
    for u in range(NUM_USERS):
        for i in ui[up[u]:up[u + 1]]:
            b[u, i] += 1 / float(up[u + 1] - up[u])
    return a @ b


def exact_steps(csr, start: int, length: int, p: float) -> torch.Tensor:
    P = transition(csr)
    e = torch.zeros(NUM_ITEMS, dtype=torch.float64)
    e[start] = 1
    out, pi = [], e @ P
    out.append(pi)
    for _ in range(1, length):
        pi = (p * e + (1 - p) * pi) @ P
        out.append(pi)
    return torch.stack(out)  # [length, items]


@pytest.mark.parametrize('backend', BACKENDS, indirect=True)
@pytest.mark.parametrize('p', [0.0, 0.4])
def test_every_backend_walks_the_exact_distribution(backend, p):
    csr = make_csr()
    length, walks = 4, 20_000
    gen = torch.Generator().manual_seed(0)
    for s in (0, 5, 11):
        start = torch.full((walks, ), s)
        out = random_walk(csr, start, length, p, gen, backend=backend)
        assert out.shape == (walks, length) and int(out.min()) >= 0
        for t in range(length):
            emp = torch.bincount(out[:, t], minlength=NUM_ITEMS).double()
            tv = 0.5 * (emp / walks - exact_steps(csr, s, length, p)[t]
                        ).abs().sum()
            assert tv < 0.03, (backend, p, s, t, float(tv))


@pytest.mark.parametrize('backend', BACKENDS, indirect=True)
def test_restarts_are_real_on_every_backend(backend):
    # With p close to 1 every step restarts: each position is one step from
    # the start. Without restarts, positions 2+ drift away from it.
    csr = make_csr()
    gen = torch.Generator().manual_seed(1)
    start = torch.full((20_000, ), 2)
    one_step = exact_steps(csr, 2, 1, 0.0)[0]
    out = random_walk(csr, start, 3, 0.999, gen, backend=backend)
    far = random_walk(csr, start, 3, 0.0, gen, backend=backend)
    for t in range(3):
        emp = torch.bincount(out[:, t], minlength=NUM_ITEMS).double() / 2e4
        assert 0.5 * (emp - one_step).abs().sum() < 0.03
    emp = torch.bincount(far[:, 2], minlength=NUM_ITEMS).double() / 2e4
    assert 0.5 * (emp - one_step).abs().sum() > 0.05


@pytest.mark.parametrize('backend', BACKENDS, indirect=True)
def test_importance_weights_agree_with_the_plain_backend(backend):
    csr = make_csr()
    kw = dict(num_neighbors=NUM_ITEMS, num_walks=2000, walk_length=2)

    def mean_alpha(name):
        acc = torch.zeros(NUM_ITEMS, NUM_ITEMS, dtype=torch.float64)
        for seed in range(5):
            g = importance_graph(csr, seed=seed, backend=name, **kw)
            src, dst = g.edge_index
            acc.index_put_((dst, src), g.edge_weight.double(),
                           accumulate=True)
        return acc / 5

    diff = (mean_alpha(backend) - mean_alpha('torch')).abs().max()
    assert diff < 0.02, float(diff)


@pytest.mark.parametrize('backend', BACKENDS, indirect=True)
def test_seeded_walks_are_reproducible_and_leave_global_rng(backend):
    csr = make_csr()
    start = torch.arange(NUM_ITEMS).repeat(10)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = random_walk(csr, start, 3, 0.2, torch.Generator().manual_seed(7),
                    backend=backend)
    assert torch.equal(torch.get_rng_state(), before)
    b = random_walk(csr, start, 3, 0.2, torch.Generator().manual_seed(7),
                    backend=backend)
    c = random_walk(csr, start, 3, 0.2, torch.Generator().manual_seed(8),
                    backend=backend)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize('backend', BACKENDS, indirect=True)
def test_start_item_without_users_gives_minus_one(backend):
    csr = make_csr(isolated=True)
    start = torch.tensor([14, 3, 14])
    out = random_walk(csr, start, 3, 0.5, torch.Generator().manual_seed(0),
                      backend=backend)
    assert (out[[0, 2]] == -1).all() and (out[1] >= 0).all()
    g = importance_graph(csr, seed=0, backend=backend)
    assert int((g.edge_index[1] == 14).sum()) == 0  # no neighbourhood


def test_auto_resolution_and_errors(monkeypatch):
    assert wb.resolve_walk_backend('torch') == 'torch'
    auto = wb.resolve_walk_backend('auto', 'cpu')
    assert auto in wb.available_walk_backends('cpu')
    # auto takes the first available of its preference order:
    expected = next(b for b in wb.AUTO_ORDER['cpu']
                    if b in wb.available_walk_backends('cpu'))
    assert auto == expected
    with pytest.raises(ValueError, match="unknown walk backend 'fast'"):
        wb.resolve_walk_backend('fast')
    # A backend that is not installed: the install command, not a
    # traceback from deep inside the sampler.
    monkeypatch.setattr(wb, '_supports', lambda b, d: b == 'torch')
    assert wb.resolve_walk_backend('auto') == 'torch'
    with pytest.raises(ValueError, match=r"torch_cluster.*not installed.*"
                       r"pip install --no-build-isolation torch-cluster"):
        wb.resolve_walk_backend('torch_cluster')
    with pytest.raises(ConfigError, match=r"sampler.backend=torch_cluster"):
        SamplerConfig(backend='torch_cluster')
    with pytest.raises(ConfigError, match=r"sampler.backend"):
        SamplerConfig(backend='cluster')


def test_backend_cache_is_not_pickled(require_ext):
    import pickle
    require_ext('torch_cluster')
    csr = make_csr()
    random_walk(csr, torch.arange(3), 2, backend='torch_cluster')
    assert '_homogeneous' in csr.__dict__
    assert '_homogeneous' not in pickle.loads(pickle.dumps(csr)).__dict__


def test_layerwise_run_records_backend_and_refuses_a_switch(tmp_path,
                                                            require_ext):
    # Walks of another backend are another random stream: resuming a
    # pinsage-embed run with another backend must not mix them.
    from pinsage_pyg.inference.layerwise import (WorkDirMismatch,
                                                 layerwise_embed,
                                                 run_manifest)
    from pinsage_pyg.nn import PinSage
    require_ext('torch_cluster')
    csr = make_csr()
    x = torch.randn(NUM_ITEMS, 6)
    model = PinSage(6, 8, 8, num_layers=2).eval()
    kw = dict(num_neighbors=5, num_walks=20, seed=0, chunk_size=4,
              walk_chunk_size=4)
    assert run_manifest(model, x, csr, **kw)['sampler']['backend'] == \
        wb.resolve_walk_backend('auto')
    a = layerwise_embed(model, x, csr, tmp_path, backend='torch', **kw)
    b = layerwise_embed(model, x, csr, tmp_path, backend='torch', **kw)
    assert torch.equal(torch.as_tensor(a.load()[1]),
                       torch.as_tensor(b.load()[1]))
    with pytest.raises(WorkDirMismatch, match='sampler'):
        layerwise_embed(model, x, csr, tmp_path, backend='torch_cluster',
                        **kw)
    c = layerwise_embed(model, x, csr, tmp_path / 'tc',
                        backend='torch_cluster', **kw)
    assert c.load()[1].shape == (NUM_ITEMS, 8)
