r"""Property-based tests (hypothesis) of the sampler's public entry points:
random item-user graphs (empty, isolated items and users, repeated
edges), seed and pair ids that are out of range, negative, huge (up to
the int64 limits), duplicated or of the wrong dtype or shape, and
importance graphs with NaN / infinite / negative weights or bad edges.

Every input is classified by the test itself (valid or not). A valid one
must give a correct result (checked against a plain-Python reference), an
invalid one must end in the library's own :class:`DataError`: never an
index error deep in torch, never a float truncated or a negative id
wrapped round into a silently wrong batch."""
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch_geometric.data import Data
from torch_geometric.sampler import (EdgeSamplerInput, NegativeSampling,
                                     NodeSamplerInput)

from pinsage_pyg.data import DataError
from pinsage_pyg.sampler import (BipartiteCSR, PinSageSampler, ppr_topk,
                                 importance_graph, importance_neighbors,
                                 random_walk)

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

INT64 = (-2**63, 2**63 - 1)
#: Dtypes an id tensor may arrive in; only the integer ones can be ids.
DTYPES = [torch.int64, torch.int32, torch.int16, torch.uint8,
          torch.float32, torch.float64, torch.bool]
INTEGER = {torch.int64, torch.int32, torch.int16, torch.uint8}


@st.composite
def graphs(draw, max_items=9, max_users=7, max_edges=24):
    r"""``(user, item, num_users, num_items)`` of a random bipartite graph:
    possibly without edges, items or users, with isolated nodes and
    repeated edges."""
    num_items = draw(st.integers(0, max_items))
    num_users = draw(st.integers(0, max_users))
    if num_items == 0 or num_users == 0:
        return torch.empty(0, dtype=torch.long), torch.empty(
            0, dtype=torch.long), num_users, num_items
    pairs = draw(st.lists(st.tuples(st.integers(0, num_users - 1),
                                    st.integers(0, num_items - 1)),
                          max_size=max_edges))
    user = torch.tensor([u for u, _ in pairs], dtype=torch.long)
    item = torch.tensor([i for _, i in pairs], dtype=torch.long)
    return user, item, num_users, num_items


@st.composite
def id_tensors(draw, size, max_len=8, unique=False):
    r"""A tensor of ids for a graph of :obj:`size` nodes: mostly valid ids,
    now and then negative, out-of-range or huge ones, in any dtype and now
    and then not 1-D."""
    valid = st.integers(0, size - 1) if size > 0 else st.nothing()
    bad = st.one_of(st.integers(*INT64), st.sampled_from(
        [-1, size, size + 1, 2**31, 2**32, 2**62, INT64[0], INT64[1]]))
    elem = st.one_of(valid, valid, valid, bad) if size > 0 else bad
    values = draw(st.lists(elem, max_size=max_len, unique=unique))
    t = torch.tensor(values, dtype=torch.long)
    dtype = draw(st.sampled_from(DTYPES[:1] * 6 + DTYPES[1:]))
    t = t.to(dtype)
    if draw(st.integers(0, 9)) == 0:  # now and then not 1-D
        t = t.view(1, -1) if t.numel() else t.view(0, 1)
    return t


def is_valid(ids, size) -> bool:
    r"""What the library must accept as ids of a graph of :obj:`size`
    nodes: a 1-D integer tensor with every value in ``[0, size)``."""
    if ids.dtype not in INTEGER or ids.dim() != 1:
        return False
    v = ids.long()
    return v.numel() == 0 or (int(v.min()) >= 0 and int(v.max()) < size)


def co_engaged(user, item, num_items):
    r"""``{item: items sharing a user with it (itself included)}``."""
    by_user = {}
    for u, i in zip(user.tolist(), item.tolist()):
        by_user.setdefault(u, set()).add(i)
    out = {i: set() for i in range(num_items)}
    for items in by_user.values():
        for i in items:
            out[i] |= items
    return out


def reachable(adj, start, steps):
    r"""Items reached from :obj:`start` in 1..:obj:`steps` co-engagement
    steps."""
    seen, frontier = set(), {start}
    for _ in range(steps):
        frontier = set().union(*(adj[i] for i in frontier)) if frontier \
            else set()
        seen |= frontier
    return seen


# ----------------------------------------------------------------- graph
@SETTINGS
@given(g=graphs(), data=st.data())
def test_from_edges(g, data):
    user, item, num_users, num_items = g
    # Now and then break the edges: bad ids, dtypes, sizes.
    if data.draw(st.booleans()):
        user = data.draw(id_tensors(num_users, max_len=user.numel() + 2))
    if data.draw(st.booleans()):
        item = data.draw(id_tensors(num_items, max_len=item.numel() + 2))
    valid = (is_valid(user, num_users) and is_valid(item, num_items)
             and user.numel() == item.numel())
    if not valid:
        with pytest.raises(DataError):
            BipartiteCSR.from_edges(user, item, num_users, num_items)
        return
    csr = BipartiteCSR.from_edges(user, item, num_users, num_items)
    assert csr.num_items == num_items and csr.num_users == num_users
    # Both directions hold exactly the input edges:
    fwd = sorted(zip(user.tolist(), item.tolist()))
    deg = (csr.item_ptr[1:] - csr.item_ptr[:-1]).tolist()
    by_item = [(u, i) for i in range(num_items) for u in
               csr.item_users[csr.item_ptr[i]:csr.item_ptr[i + 1]].tolist()]
    assert sorted(by_item) == fwd and sum(deg) == len(fwd)
    by_user = [(u, i) for u in range(num_users) for i in
               csr.user_items[csr.user_ptr[u]:csr.user_ptr[u + 1]].tolist()]
    assert sorted(by_user) == fwd


@pytest.mark.parametrize('n', [-1, 2.5, 'x', None])
def test_from_edges_refuses_bad_sizes(n):
    e = torch.zeros(1, dtype=torch.long)
    with pytest.raises(DataError, match='num_users'):
        BipartiteCSR.from_edges(e, e, n, 1)


# ----------------------------------------------------------------- walks
@SETTINGS
@given(g=graphs(), data=st.data(), walk_length=st.integers(1, 3),
       restart=st.sampled_from([0.0, 0.5]))
def test_random_walk(g, data, walk_length, restart):
    user, item, num_users, num_items = g
    csr = BipartiteCSR.from_edges(user, item, num_users, num_items)
    start = data.draw(id_tensors(num_items))
    if not is_valid(start, num_items):
        with pytest.raises(DataError, match='random_walk start'):
            random_walk(csr, start, walk_length, restart, key=7)
        return
    out = random_walk(csr, start, walk_length, restart, key=7)
    assert out.shape == (start.numel(), walk_length)
    adj = co_engaged(user, item, num_items)
    for s, walk in zip(start.tolist(), out.tolist()):
        if not adj[s]:  # no users: no step possible
            assert walk == [-1] * walk_length
            continue
        prev = s
        for v in walk:  # each step to an item sharing a user
            assert v in adj[prev] or (restart > 0 and v in adj[s]), (s, walk)
            prev = v


@SETTINGS
@given(g=graphs(), data=st.data(), walk_length=st.integers(1, 3),
       T=st.integers(1, 4))
def test_importance_neighbors(g, data, walk_length, T):
    user, item, num_users, num_items = g
    csr = BipartiteCSR.from_edges(user, item, num_users, num_items)
    seeds = data.draw(id_tensors(num_items))
    if not is_valid(seeds, num_items):
        with pytest.raises(DataError, match='importance_neighbors seeds'):
            importance_neighbors(csr, seeds, T, 20, walk_length, key=3)
        return
    row, nbr, w = importance_neighbors(csr, seeds, T, 20, walk_length, key=3)
    adj = co_engaged(user, item, num_items)
    seeds = seeds.long().tolist()
    for r, s in enumerate(seeds):
        mine = row == r
        got, wt = nbr[mine].tolist(), w[mine]
        assert len(got) <= T and len(set(got)) == len(got)
        assert s not in got
        assert set(got) <= reachable(adj, s, walk_length)
        if got:
            assert torch.isclose(wt.sum(), torch.tensor(1.0))
            assert bool((wt > 0).all())
            assert bool((wt[1:] <= wt[:-1]).all())  # decreasing weight
    # Keyed by item: a seed's neighbourhood does not depend on the others.
    for r, s in enumerate(seeds):
        r1, n1, w1 = importance_neighbors(csr, torch.tensor([s]), T, 20,
                                          walk_length, key=3)
        assert torch.equal(n1, nbr[row == r]) and torch.equal(w1,
                                                              w[row == r])


@SETTINGS
@given(g=graphs(), data=st.data(), chunk=st.integers(1, 4))
def test_importance_graph_nodes(g, data, chunk):
    user, item, num_users, num_items = g
    csr = BipartiteCSR.from_edges(user, item, num_users, num_items)
    nodes = data.draw(id_tensors(num_items))
    if not is_valid(nodes, num_items):
        with pytest.raises(DataError, match='importance_graph nodes'):
            importance_graph(csr, num_neighbors=3, num_walks=10, seed=0,
                             nodes=nodes, chunk_size=chunk)
        return
    part = importance_graph(csr, num_neighbors=3, num_walks=10, seed=0,
                            nodes=nodes, chunk_size=chunk)
    full = importance_graph(csr, num_neighbors=3, num_walks=10, seed=0)
    # Exactly the full graph's edges into the requested items (once per
    # listing of an item), whatever the chunking.
    ei, pe = full.edge_index, part.edge_index
    for v in set(nodes.long().tolist()):
        times = nodes.long().tolist().count(v)
        want = ei[0, ei[1] == v].tolist() * times
        assert sorted(pe[0, pe[1] == v].tolist()) == sorted(want)
    assert part.num_nodes == num_items
    assert set(pe[1].tolist()) <= set(nodes.long().tolist())


@SETTINGS
@given(g=graphs(), data=st.data(), method=st.sampled_from(['walk',
                                                           'power']))
def test_ppr_topk_queries(g, data, method):
    user, item, num_users, num_items = g
    csr = BipartiteCSR.from_edges(user, item, num_users, num_items)
    queries = data.draw(id_tensors(num_items))
    if not is_valid(queries, num_items):
        with pytest.raises(DataError, match='PPR queries'):
            ppr_topk(csr, queries, 2, method=method)
        return
    items, scores = ppr_topk(csr, queries, 2, method=method)
    assert items.shape == scores.shape == (queries.numel(), 2)
    assert bool(((items >= -1) & (items < num_items)).all())
    assert not bool((items == queries.long().view(-1, 1)).any())


# --------------------------------------------------------------- sampler
def importance(g, seed=0):
    user, item, num_users, num_items = g
    csr = BipartiteCSR.from_edges(user, item, num_users, num_items)
    return importance_graph(csr, num_neighbors=3, num_walks=10, seed=seed)


def reference_khop(graph, seeds, num_layers, forbidden=frozenset()):
    r"""Algorithm 2 in plain Python: ``(nodes, edges per hop)``."""
    nbrs = {}
    for s, d in graph.edge_index.t().tolist():
        nbrs.setdefault(d, []).append(s)
    nodes, frontier, layers = list(seeds), list(seeds), []
    for _ in range(num_layers):
        edges = [(s, d) for d in frontier for s in nbrs.get(d, [])
                 if frozenset((s, d)) not in forbidden]
        layers.append(edges)
        new = sorted({s for s, _ in edges} - set(nodes))
        nodes += new
        frontier = new
    return nodes, layers


def check_output(out, graph, seeds, num_layers, forbidden=frozenset()):
    nodes, layers = reference_khop(graph, seeds, num_layers, forbidden)
    assert out.node.tolist() == nodes
    assert out.num_sampled_nodes[0] == len(seeds)
    assert out.num_sampled_edges == [len(e) for e in layers]
    got = list(zip(out.node[out.row].tolist(), out.node[out.col].tolist()))
    assert got == [e for layer in layers for e in layer]
    ei = graph.edge_index
    assert torch.equal(ei[0, out.edge], out.node[out.row])
    assert torch.equal(ei[1, out.edge], out.node[out.col])


@SETTINGS
@given(g=graphs(), data=st.data(), num_layers=st.integers(0, 3))
def test_sample_from_nodes(g, data, num_layers):
    graph = importance(g)
    sampler = PinSageSampler(graph, num_layers)
    seeds = data.draw(id_tensors(graph.num_nodes))
    inputs = NodeSamplerInput(input_id=None, node=seeds)
    if not is_valid(seeds, graph.num_nodes) or \
            len(set(seeds.tolist())) != seeds.numel():
        with pytest.raises(DataError, match='seed nodes'):
            sampler.sample_from_nodes(inputs)
        return
    out = sampler.sample_from_nodes(inputs)
    check_output(out, graph, seeds.long().tolist(), num_layers)


@SETTINGS
@given(g=graphs(), data=st.data(), num_layers=st.integers(1, 2),
       shared=st.booleans(), amount=st.integers(1, 3))
def test_sample_from_edges(g, data, num_layers, shared, amount):
    graph = importance(g)
    n = graph.num_nodes
    sampler = PinSageSampler(graph, num_layers, shared_negatives=shared,
                             seed=5)
    src = data.draw(id_tensors(n))
    dst = data.draw(id_tensors(n)) if data.draw(st.booleans()) else \
        src.flip(-1)
    inputs = EdgeSamplerInput(input_id=torch.arange(max(src.numel(), 1)),
                              row=src, col=dst)
    neg = NegativeSampling('triplet', amount=amount)
    if not (is_valid(src, n) and is_valid(dst, n)
            and src.numel() == dst.numel()):
        with pytest.raises(DataError, match='PinSageSampler pairs'):
            sampler.sample_from_edges(inputs, neg)
        return
    if src.numel() == 0 or n == 0:
        return
    out = sampler.sample_from_edges(inputs, neg)
    _, src_index, dst_index, neg_index, _ = out.metadata
    assert torch.equal(out.node[src_index], src.long())
    assert torch.equal(out.node[dst_index], dst.long())
    assert neg_index.shape == ((min(amount, n), ) if shared
                               else (src.numel(), amount))
    negs = out.node[neg_index]
    assert bool(((negs >= 0) & (negs < n)).all())
    if shared:
        assert len(set(negs.tolist())) == negs.numel()
    seeds = out.node[:out.num_sampled_nodes[0]].tolist()
    pairs = {frozenset((a, b)) for a, b in zip(src.tolist(), dst.tolist())}
    check_output(out, graph, seeds, num_layers, pairs)


def _tamper(graph, what):
    g = Data(edge_index=graph.edge_index.clone(),
             edge_weight=graph.edge_weight.clone(),
             num_nodes=graph.num_nodes)
    if what == 'nan':
        g.edge_weight[0] = float('nan')
    elif what == 'inf':
        g.edge_weight[-1] = float('inf')
    elif what == 'negative':
        g.edge_weight[0] = -0.5
    elif what == 'int weight':
        g.edge_weight = torch.ones_like(g.edge_index[0])
    elif what == 'short weight':
        g.edge_weight = g.edge_weight[1:]
    elif what == 'neighbour out of range':
        g.edge_index[0, 0] = graph.num_nodes
    elif what == 'negative target':
        g.edge_index[1, 0] = -1
    elif what == 'float edges':
        g.edge_index = g.edge_index.float()
    elif what == 'unsorted':
        g.edge_index = g.edge_index.flip(-1)
    elif what == 'one row':
        g.edge_index = g.edge_index[:1]
    return g


TAMPER = ['nan', 'inf', 'negative', 'int weight', 'short weight',
          'neighbour out of range', 'negative target', 'float edges',
          'unsorted', 'one row']


@SETTINGS
@given(g=graphs(), what=st.sampled_from(TAMPER))
@example(g=(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 2]), 2, 3),
         what='nan')
def test_sampler_refuses_bad_graphs(g, what):
    graph = importance(g)
    if graph.edge_index.size(1) < 2 or bool(
            (graph.edge_index[1] == graph.edge_index[1, 0]).all()):
        return  # nothing to tamper with (or flipping keeps it sorted)
    bad = _tamper(graph, what)
    with pytest.raises(DataError, match='importance graph'):
        PinSageSampler(bad, 2)


def test_sampler_refuses_data_without_edge_index():
    with pytest.raises(DataError, match='importance graph'):
        PinSageSampler(Data(x=torch.zeros(3, 1)), 1)
