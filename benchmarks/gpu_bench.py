r"""GPU benchmark: sampler seeds/s (CPU vs GPU), training positive pairs/s
at the paper's dimensions and at the default size, and layer-wise
embedding items/s, on a synthetic item-user graph (2M items by default).

    python benchmarks/gpu_bench.py                 # full run (needs CUDA)
    python benchmarks/gpu_bench.py --quick         # small, runs on CPU too
    python benchmarks/gpu_bench.py --out benchmarks/results/gpu.md

Rows are labelled with the device that produced them; a run without CUDA
measures the CPU only and says so (no GPU numbers are made up).
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from torch_geometric.sampler import EdgeSamplerInput, NegativeSampling

from pinsage_pyg.nn import PinSage, sampled_softmax_loss
from pinsage_pyg.sampler import (BipartiteCSR, PinSageSampler,
                                 importance_graph, importance_neighbors)


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timeit(fn, device, repeat=3):
    fn()  # warm-up (kernels, allocator)
    sync(device)
    t = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    sync(device)
    return (time.perf_counter() - t) / repeat, out


def synthetic_graph(num_items, num_users, per_user, num_clusters, seed=0):
    r"""Clustered item-user interactions, vectorised: each user draws
    :obj:`per_user` items from their cluster with Zipf-like popularity
    (80%) or from the whole catalogue (20%)."""
    g = torch.Generator().manual_seed(seed)
    size = num_items // num_clusters
    cluster = torch.randint(num_clusters, (num_users, ), generator=g)
    n = num_users * per_user
    user = torch.arange(num_users).repeat_interleave(per_user)
    rank = (torch.rand(n, generator=g) ** 3 * size).long()  # popular first
    item = cluster[user] * size + rank
    mix = torch.rand(n, generator=g) < 0.2
    item[mix] = torch.randint(num_items, (int(mix.sum()), ), generator=g)
    return BipartiteCSR.from_edges(user, item.clamp(max=num_items - 1),
                                   num_users, num_items)


def bench_walks(csr, device, seeds, T, walks):
    c = csr.to(device)
    s = torch.randint(csr.num_items, (seeds, ), device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    sec, _ = timeit(lambda: importance_neighbors(c, s, T, walks, 2,
                                                 generator=gen), device)
    return seeds / sec


def make_batch(sampler, graph, x, batch, negatives, num_items, device,
               gen):
    src = torch.randint(num_items, (batch, ), device=device, generator=gen)
    dst = torch.randint(num_items, (batch, ), device=device, generator=gen)
    out = sampler.sample_from_edges(
        EdgeSamplerInput(input_id=torch.arange(batch, device=device),
                         row=src, col=dst, label=None),
        NegativeSampling('triplet', negatives))
    _, src_i, pos_i, neg_i, _ = out.metadata
    return dict(x=x[out.node], edge_index=torch.stack([out.row, out.col]),
                edge_weight=graph.edge_weight[out.edge],
                nodes=out.num_sampled_nodes, edges=out.num_sampled_edges,
                src=src_i, pos=pos_i, neg=neg_i)


def bench_training(graph, x, device, hidden, out, batch, negatives, steps,
                   amp):
    model = PinSage(x.size(1), hidden, out, num_layers=2).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    sampler = PinSageSampler(graph, 2, seed=0)
    gen = torch.Generator(device=device).manual_seed(1)
    n = int(graph.num_nodes)

    def sample():
        return make_batch(sampler, graph, x, batch, negatives, n, device,
                          gen)

    def train(b):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=amp):
            q, i = model(b['x'], b['edge_index'], b['edge_weight'],
                         b['nodes'], b['edges'])
            loss = sampled_softmax_loss(q[b['src']].float(),
                                        i[b['pos']].float(),
                                        i[b['neg']].float(), 0.05)
        loss.backward()
        opt.step()

    t_sample, b = timeit(sample, device, repeat=max(1, steps // 2))
    t_train, _ = timeit(lambda: train(b), device, repeat=steps)
    t_both, _ = timeit(lambda: train(sample()), device, repeat=steps)
    return dict(sample=t_sample, train=t_train, both=t_both,
                nodes=int(b['x'].size(0)), edges=int(b['edge_index'].size(1)))


def bench_inference(graph, x, device, hidden, out, chunk):
    model = PinSage(x.size(1), hidden, out, num_layers=2).to(device).eval()
    ei, w, xx = (graph.edge_index.to(device), graph.edge_weight.to(device),
                 x.to(device))
    with torch.no_grad():
        sec, _ = timeit(lambda: model.inference(xx, ei, w, chunk_size=chunk),
                        device, repeat=1)
    return graph.num_nodes / sec


def plain_layer(graph, x, device, d):
    r"""Reference: one plain-PyTorch PinSage-like layer (gather, weighted
    scatter-sum, concat, linear) over all nodes."""
    lin_q = torch.nn.Linear(x.size(1), d).to(device)
    lin_w = torch.nn.Linear(x.size(1) + d, d).to(device)
    src, dst = graph.edge_index.to(device)
    w = graph.edge_weight.to(device)
    xx = x.to(device)

    def layer():
        with torch.no_grad():
            m = torch.relu(lin_q(xx))
            agg = torch.zeros_like(m).index_add_(0, dst, m[src] * w[:, None])
            return torch.relu(lin_w(torch.cat([xx, agg], 1)))
    sec, _ = timeit(layer, device, repeat=2)
    return graph.num_nodes / sec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--quick', action='store_true',
                   help='small graph and dims: proves the script on a CPU')
    p.add_argument('--items', type=int, default=None)
    p.add_argument('--features', type=int, default=256)
    p.add_argument('--steps', type=int, default=None)
    p.add_argument('--amp', action='store_true', default=None,
                   help='bf16 autocast for training (default on CUDA)')
    p.add_argument('--out', type=Path, default=None)
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    gpu = torch.device('cuda') if cuda else None
    amp = cuda if args.amp is None else args.amp
    q = args.quick
    items = args.items or (20_000 if q else 2_000_000)
    steps = args.steps or (2 if q else 20)
    paper = (2048, 1024, 2048) if not q else (128, 64, 256)
    default = (256, 128, 1024) if not q else (64, 32, 128)
    T, walks = (50, 100) if not q else (10, 20)
    negatives = 500 if not q else 50
    torch.set_num_threads(max(1, torch.get_num_threads()))

    t0 = time.perf_counter()
    csr = synthetic_graph(items, items // 2, 20, max(10, items // 2000))
    x = torch.randn(items, args.features)
    info = (f"{items:,} items, {items // 2:,} users, "
            f"{csr.item_users.numel():,} interactions, {args.features} "
            f"feature dims (built in {time.perf_counter() - t0:.0f}s)")
    print(info, flush=True)
    rows = []

    cpu = torch.device('cpu')
    seeds_cpu = 2_000 if q else 20_000
    rows.append(('sampler: walks + top-T (T=%d, %d walks x 2 hops)'
                 % (T, walks), 'cpu',
                 f"{bench_walks(csr, cpu, seeds_cpu, T, walks):,.0f} seeds/s"))
    if cuda:
        rows.append(('sampler: walks + top-T (T=%d, %d walks x 2 hops)'
                     % (T, walks), 'cuda',
                     f"{bench_walks(csr, gpu, 200_000, T, walks):,.0f} "
                     f"seeds/s"))
    dev = gpu if cuda else cpu
    t = time.perf_counter()
    graph = importance_graph(csr.to(dev), None, T, walks, 2, seed=0)
    rows.append(('importance graph of all items', str(dev.type),
                 f"{items / (time.perf_counter() - t):,.0f} items/s"))
    xd = x.to(dev)
    names = ('paper dims', 'default dims') if not q else \
        ('reduced paper row', 'reduced default row')
    for name, (h, o, b) in zip(names, (paper, default)):
        r = bench_training(graph, xd, dev, h, o, b, negatives, steps, amp)
        label = (f"training, {name} (hidden {h}, out {o}, batch {b}, K=2, "
                 f"T={T}{', bf16' if amp else ''})")
        rows.append((label + ': model step only', dev.type,
                     f"{b / r['train']:,.0f} pairs/s"))
        rows.append((label + ': + on-device sampling', dev.type,
                     f"{b / r['both']:,.0f} pairs/s "
                     f"({r['nodes']:,} nodes, {r['edges']:,} edges/batch)"))
    d = default[0]
    rows.append((f'layer-wise embedding, PinSage.inference (hidden {d}, out '
                 f'{default[1]}, K=2, T={T})', dev.type,
                 f"{bench_inference(graph, x, dev, d, default[1], 262144):,.0f}"
                 f" items/s (both layers)"))
    try:
        ref = f"{plain_layer(graph, x, dev, d):,.0f} nodes/s"
    except torch.OutOfMemoryError:  # the [edges, d] message tensor
        ref = (f"out of memory (its [{graph.edge_index.size(1):,}, {d}] "
               f"message tensor; PinSage.inference fuses it away)")
        torch.cuda.empty_cache()
    rows.append((f'reference: one plain-PyTorch layer (d={d}, T={T})',
                 dev.type, ref))

    card = torch.cuda.get_device_name(0) if cuda else 'none (CPU only)'
    head = [
        '# GPU benchmark', '',
        f"Command: `bash benchmarks/gpu.sh{' --quick' if q else ''}`", '',
        f"Card: {card}; torch {torch.__version__}; host "
        f"{platform.machine()}, {torch.get_num_threads()} CPU threads. "
        f"Graph: {info}.",
        '' if cuda else '\n**No CUDA device: every row below is a CPU '
        'number from a reduced run that only proves the script works. '
        'They are not GPU numbers.**', '',
        '| measurement | device | result |', '|---|---|---:|']
    text = '\n'.join(head + [f'| {a} | {b} | {c} |' for a, b, c in rows])
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + '\n')


if __name__ == '__main__':
    main()
