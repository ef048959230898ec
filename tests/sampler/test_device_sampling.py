r"""GPU-side sampling (``sampler.device``): importance graphs built on a
device follow the same distribution as the default CPU path, come back to
the CPU for the loader, and ``cuda`` without a GPU is a clear start-up
error.

The statistical tests run the device code path on CPU tensors everywhere
(a CSR moved with ``.to(device)``, the generator created on its device,
chunked seeds) and again on CUDA when a GPU is visible."""
import pytest
import torch
from hydra import compose, initialize_config_module

from pinsage_pyg.config import ConfigError, SamplerConfig, check_config
from pinsage_pyg.data import build_dataset, synthetic_interactions
from pinsage_pyg.sampler import BipartiteCSR, importance_graph
from pinsage_pyg.training.datamodule import PinSageDataModule

NO_CUDA = 'no CUDA GPU visible: the CUDA sampler path needs one (the same ' \
    'test runs on CPU tensors)'
DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason=NO_CUDA))]

NUM_ITEMS, NUM_USERS = 14, 10


def random_csr(seed: int = 0) -> BipartiteCSR:
    gen = torch.Generator().manual_seed(seed)
    adj = torch.rand(NUM_USERS, NUM_ITEMS, generator=gen) < 0.3
    adj[torch.arange(NUM_ITEMS) % NUM_USERS, torch.arange(NUM_ITEMS)] = True
    user, item = adj.nonzero().t()
    return BipartiteCSR.from_edges(user, item, NUM_USERS, NUM_ITEMS)


def exact_one_step_alpha(csr: BipartiteCSR) -> torch.Tensor:
    r"""``[u, v]``: probability that one item -> user -> item step from
    ``u`` ends at ``v``, renormalised over ``v != u`` (the expected
    importance weight when T keeps every visited item)."""
    deg_i = (csr.item_ptr[1:] - csr.item_ptr[:-1]).double()
    deg_u = (csr.user_ptr[1:] - csr.user_ptr[:-1]).double()
    a = torch.zeros(NUM_ITEMS, NUM_USERS, dtype=torch.float64)
    b = torch.zeros(NUM_USERS, NUM_ITEMS, dtype=torch.float64)
    for i in range(NUM_ITEMS):
        for u in csr.item_users[csr.item_ptr[i]:csr.item_ptr[i + 1]]:
            a[i, u] += 1 / deg_i[i]
    for u in range(NUM_USERS):
        for i in csr.user_items[csr.user_ptr[u]:csr.user_ptr[u + 1]]:
            b[u, i] += 1 / deg_u[u]
    p = a @ b
    p.fill_diagonal_(0)
    return p / p.sum(1, keepdim=True)


def mean_alpha(graphs) -> torch.Tensor:
    r"""Mean importance-weight matrix ``[u, v]`` over several graphs."""
    acc = torch.zeros(NUM_ITEMS, NUM_ITEMS, dtype=torch.float64)
    n = 0
    for g in graphs:
        assert g.edge_index.device.type == 'cpu'
        src, dst = g.edge_index
        acc.index_put_((dst, src), g.edge_weight.double(), accumulate=True)
        n += 1
    return acc / n


def default_path(csr, seeds, **kw):
    return (importance_graph(csr, seed=s, **kw) for s in seeds)


def device_path(csr, device, seeds, **kw):
    # The CSR and the generator live on `device`; seeds are processed in
    # chunks (another consumption of the random stream); back to the CPU.
    dev_csr = csr.to(device)
    return (importance_graph(dev_csr, seed=s, chunk_size=5, **kw).cpu()
            for s in seeds)


NUM_WALKS, NUM_SEEDS = 400, 25


def alpha_stack(graphs) -> torch.Tensor:
    r"""``[graphs, u, v]`` importance weights of each graph."""
    return torch.stack([mean_alpha([g]) for g in graphs])


def z_scores(a: torch.Tensor, b) -> torch.Tensor:
    r"""Per-entry Welch z of the mean weights of two ``[runs, u, v]``
    stacks (or of one stack against exact values :obj:`b` ``[u, v]``),
    with the observed spread over runs; the floor ``1e-3`` keeps entries
    that are (almost) always zero from dividing by ~0. Identical
    distributions give a maximum around 3-4 over the ~200 entries (t with
    ~48 degrees of freedom); the tests allow 6."""
    var = a.var(0) / a.size(0)
    if b.dim() == 3:
        var = var + b.var(0) / b.size(0)
        b = b.mean(0)
    return (a.mean(0) - b).abs() / (var.sqrt() + 1e-3)


@pytest.mark.parametrize('device', DEVICES)
def test_device_path_matches_exact_one_step_distribution(device):
    csr = random_csr()
    exact = exact_one_step_alpha(csr)
    kw = dict(num_neighbors=NUM_ITEMS, num_walks=NUM_WALKS, walk_length=1)
    ref = alpha_stack(default_path(csr, range(NUM_SEEDS), **kw))
    dev = alpha_stack(device_path(csr, device, range(100, 100 + NUM_SEEDS),
                                  **kw))
    assert z_scores(ref, exact).max() < 6
    assert z_scores(dev, exact).max() < 6
    assert z_scores(dev, ref).max() < 6
    assert (dev.mean(0) - exact).abs().max() < 0.03  # absolute, too
    # Different seeds, different graphs (not the same stream replayed):
    assert not torch.equal(ref[0], dev[0])


@pytest.mark.parametrize('device', DEVICES)
def test_device_path_matches_default_path_with_top_t_and_restarts(device):
    # Longer walks with restarts: no closed form, so the two paths are
    # compared with each other, first without a top-T cut (the visit
    # distribution), then with T=4.
    csr = random_csr(1)
    kw = dict(num_walks=NUM_WALKS, walk_length=3, restart_prob=0.3)
    full = dict(kw, num_neighbors=NUM_ITEMS)
    ref = alpha_stack(default_path(csr, range(NUM_SEEDS), **full))
    dev = alpha_stack(device_path(csr, device, range(500, 500 + NUM_SEEDS),
                                  **full))
    assert z_scores(ref, dev).max() < 6
    # Top T=4: near the cut an item is in or out of a run's top T (ties,
    # close counts), so weights spread far more over runs; the z-test uses
    # the observed spread, ...
    T = 4
    a = alpha_stack(default_path(csr, range(NUM_SEEDS), **kw,
                                 num_neighbors=T))
    dev_g = list(device_path(csr, device, range(700, 700 + NUM_SEEDS), **kw,
                             num_neighbors=T))
    b = alpha_stack(dev_g)
    assert z_scores(a, b).max() < 6
    # ... and every run's top T overlaps the top T of the (untruncated)
    # visit distribution as much on both paths.
    best = ref.mean(0).topk(T, dim=1).indices

    def overlap(stack):
        hit = (stack > 0).gather(2, best.expand(stack.size(0), -1, -1))
        return float(hit.double().mean())
    assert abs(overlap(a) - overlap(b)) < 0.05
    assert overlap(b) > 0.7  # the walks do find the important neighbours
    for g in dev_g:  # structure: top-T, weights sum to 1
        src, dst = g.edge_index
        assert torch.all(dst[1:] >= dst[:-1])
        assert int(torch.bincount(dst, minlength=NUM_ITEMS).max()) <= T
        sums = torch.zeros(NUM_ITEMS).index_add_(0, dst, g.edge_weight)
        assert torch.allclose(sums[sums > 0], torch.ones(1))


@pytest.mark.parametrize('device', DEVICES)
def test_device_path_is_seeded_and_accepts_cpu_nodes(device):
    csr = random_csr().to(device)
    nodes = torch.tensor([3, 0, 7])  # CPU index, any device CSR
    a = importance_graph(csr, num_neighbors=3, num_walks=20, seed=4,
                         nodes=nodes)
    b = importance_graph(csr, num_neighbors=3, num_walks=20, seed=4,
                         nodes=nodes)
    assert a.edge_index.device.type == torch.device(device).type
    assert torch.equal(a.edge_index, b.edge_index)
    assert torch.equal(a.edge_weight, b.edge_weight)
    assert set(a.edge_index[1].tolist()) <= {0, 3, 7}
    empty = importance_graph(csr, seed=0,
                             nodes=torch.empty(0, dtype=torch.long))
    assert empty.edge_index.shape == (2, 0)
    assert empty.edge_index.device == a.edge_index.device


@pytest.mark.parametrize('device', DEVICES)
def test_datamodule_builds_graphs_on_sampler_device(dataset, device):
    cfg = SamplerConfig(num_neighbors=5, num_walks=10, num_negatives=8,
                        device=device)
    dm = PinSageDataModule(dataset, 1, cfg)
    assert dm.sampler_device.type == device
    g = dm.train_graph(0)
    # Back on the CPU for the loader's worker processes, with the features:
    assert g.edge_index.device.type == 'cpu'
    assert g.edge_weight.device.type == 'cpu'
    assert g.x is dataset.x
    assert g.num_nodes == dataset.num_items
    assert torch.equal(g.edge_index, dm.train_graph(0).edge_index)  # seeded
    if device == 'cuda':
        assert dm._walk_csr.item_ptr.device.type == 'cuda'
    batch = next(iter(dm.train_dataloader()))
    assert batch.x.device.type == 'cpu' and batch.src_index.numel() > 0


# ------------------------------------------------------------- config ---
def test_sampler_device_config(monkeypatch):
    assert SamplerConfig().device == 'cpu'
    assert SamplerConfig().resolve_device() == torch.device('cpu')
    with pytest.raises(ConfigError, match=r"sampler.device must be one of "
                       r"\['cpu', 'cuda', 'auto'\] \(got 'gpu'\)"):
        SamplerConfig(device='gpu')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert SamplerConfig(device='auto').resolve_device().type == 'cpu'
    with pytest.raises(ConfigError, match='sampler.device=cuda but no CUDA '
                       'GPU is visible.*sampler.device=cpu'):
        SamplerConfig(device='cuda').resolve_device()


def test_sampler_device_cuda_without_gpu_fails_at_startup(monkeypatch,
                                                          tmp_path):
    from pinsage_pyg.training.pipeline import run
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with initialize_config_module(config_module='pinsage_pyg.configs',
                                  version_base='1.3'):
        cfg = compose('train', overrides=[
            'sampler.device=cuda', 'data=files',
            f'data.interactions={tmp_path / "missing.csv"}',
            f'output.dir={tmp_path / "out"}'])
    assert cfg.sampler.device == 'cuda'
    check_config(cfg)  # a valid choice: only this machine lacks the GPU
    # Refused before the (missing) data is read:
    with pytest.raises(ConfigError, match='sampler.device=cuda but no CUDA'):
        run(cfg)
    # The datamodule (Python API) refuses it too:
    inter, _ = synthetic_interactions(num_users=10, num_items=12,
                                      num_interactions=80)
    with pytest.raises(ConfigError, match='sampler.device=cuda'):
        PinSageDataModule(build_dataset(inter), 1,
                          SamplerConfig(device='cuda'))


@pytest.mark.parametrize('device', DEVICES)
def test_sampler_takes_cpu_inputs_for_a_graph_on_device(device):
    # PyG's input containers (and a CPU loader) hand CPU ids to a sampler
    # whose importance graph lives on the GPU: it must sample there.
    from torch_geometric.sampler import (EdgeSamplerInput, NegativeSampling,
                                         NodeSamplerInput)

    from pinsage_pyg.sampler import PinSageSampler
    graph = importance_graph(random_csr().to(device), None, 4, 20, 2, seed=0)
    sampler = PinSageSampler(graph, 2, seed=0)
    out = sampler.sample_from_edges(
        EdgeSamplerInput(input_id=torch.arange(3), row=torch.tensor([0, 1, 2]),
                         col=torch.tensor([3, 4, 5]), label=None),
        NegativeSampling('triplet', 4))
    assert out.node.device.type == device
    assert out.row.device.type == device
    # the query-positive edges are excluded on the device, too
    node = out.node.cpu()
    pairs = {(int(node[r]), int(node[c]))
             for r, c in zip(out.row.cpu(), out.col.cpu())}
    for q, p in [(0, 3), (1, 4), (2, 5)]:
        assert (q, p) not in pairs and (p, q) not in pairs
    out = sampler.sample_from_nodes(NodeSamplerInput(
        input_id=None, node=torch.tensor([0, 5, 7])))
    assert out.node.device.type == device
    assert out.node[:3].cpu().tolist() == [0, 5, 7]
