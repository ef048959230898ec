"""Probe for issue 14 (not the product yet): PinSage (features + importance graph,
no ID embeddings) trained with a full-graph forward with gradients and an exact
full softmax over every item, on row-aggregated window-weighted forward + backward
targets (the ingredients of ../shared/FINDINGS.md, "The embedding ceiling").
Best-val epoch; val and test HR@10 of the leave-last-out protocol.
    python benchmarks/full_softmax_probe.py --data movielens_100k --epochs 100 --eval_every 5
"""
import argparse, time, json, torch, torch.nn.functional as F
from hydra import compose, initialize_config_module
from pinsage_pyg.training.pipeline import load_dataset
from pinsage_pyg.evaluation.protocols import evaluation_splits
from pinsage_pyg.training.datamodule import PinSageDataModule
from pinsage_pyg.config import SamplerConfig
from pinsage_pyg.nn import PinSage
from pinsage_pyg.evaluation.baselines import EmbeddingScorer
from pinsage_pyg.evaluation.protocols import evaluate_leave_last_out
p = argparse.ArgumentParser()
p.add_argument('--data', default='movielens_100k')
p.add_argument('--window', type=int, default=5); p.add_argument('--decay', type=float, default=0.75)
p.add_argument('--backward', type=float, default=0.5)
p.add_argument('--temp', type=float, default=0.1); p.add_argument('--lr', type=float, default=1e-3)
p.add_argument('--rows', type=int, default=0)  # 0 = all rows each step
p.add_argument('--epochs', type=int, default=200); p.add_argument('--eval_every', type=int, default=10)
p.add_argument('--asym', action='store_true'); p.add_argument('--hidden', type=int, default=256)
p.add_argument('--out', type=int, default=128); p.add_argument('--wd', type=float, default=0.0)
p.add_argument('--dropout', type=float, default=0.0); p.add_argument('--refresh', type=int, default=1)
p.add_argument('--layers', type=int, default=2); p.add_argument('--aggr', default='importance')
p.add_argument('--seed', type=int, default=0); p.add_argument('--threads', type=int, default=2)
p.add_argument('--notitle', action='store_true'); p.add_argument('--patience', type=int, default=5)
p.add_argument("--time_limit", type=float, default=900)
a = p.parse_args()
torch.manual_seed(a.seed); torch.set_num_threads(a.threads)
ov = [f'data={a.data}']
if a.notitle: ov.append('data.features.text_columns=[]')
with initialize_config_module('pinsage_pyg.configs', version_base='1.3'):
    cfg = compose('train', overrides=ov)
t0 = time.time()
ds = load_dataset(cfg.data)
dm = PinSageDataModule(ds, num_layers=a.layers, sampler=SamplerConfig(**dict(cfg.sampler)), seed=a.seed)
N = ds.num_items
# targets
u, it = ds.train_user, ds.train_item
S, T, W = [], [], []
for k in range(1, a.window + 1):
    m = u[k:] == u[:-k]
    s, t = it[:-k][m], it[k:][m]; w = a.decay ** (k - 1)
    S.append(s); T.append(t); W.append(torch.full((len(s),), w))
    if a.backward > 0:
        S.append(t); T.append(s); W.append(torch.full((len(s),), a.backward * w))
S, T, W = torch.cat(S), torch.cat(T), torch.cat(W)
keep = S != T; S, T, W = S[keep], T[keep], W[keep]
tgt = torch.zeros(N, N); tgt.index_put_((S, T), W, accumulate=True)
active = torch.nonzero(tgt.sum(1) > 0).squeeze(1)
print(f'load {time.time()-t0:.1f}s items {N} pairs {len(S)} active {len(active)}', flush=True)
model = PinSage(ds.num_features, a.hidden, a.out, a.layers, aggr=a.aggr, asymmetric=a.asym, dropout=a.dropout)
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.wd)
lloo, _ = evaluation_splits(ds)
eg = dm.eval_graph
def evaluate():
    model.eval()
    with torch.no_grad():
        q, i = model.inference(eg.x, eg.edge_index, eg.edge_weight)
    model.train()
    sc = EmbeddingScorer(q, i)
    return {s: evaluate_leave_last_out(sc, *lloo[s], k=10) for s in ('val', 'test')}
best = (-1, 0, 0); g = None
for ep in range(a.epochs):
    te = time.time()
    if g is None or (a.refresh and ep % a.refresh == 0):
        g = dm.train_graph(ep)
    perm = active[torch.randperm(len(active))]
    B = a.rows or len(perm)
    tot = 0
    for b in range(0, len(perm), B):
        rows = perm[b:b + B]
        q, i = model(g.x, g.edge_index, g.edge_weight)
        logits = q[rows] @ i.t() / a.temp
        logits[torch.arange(len(rows)), rows] = float('-inf')
        lp = F.log_softmax(logits, -1)
        tr = tgt[rows]
        loss = -(tr * lp.masked_fill(tr == 0, 0)).sum() / tr.sum()
        opt.zero_grad(); loss.backward(); opt.step(); tot += loss.item()
    if (ep + 1) % a.eval_every == 0:
        r = evaluate()
        print(f'ep {ep+1} loss {tot:.4f} val {r["val"]:.4f} test {r["test"]:.4f} ({time.time()-te:.2f}s/ep, {time.time()-t0:.0f}s)', flush=True)
        if r['val'] > best[0]: best = (r['val'], r['test'], ep + 1)
        elif ep + 1 - best[2] >= a.patience * a.eval_every: print('early stop'); break
    if time.time() - t0 > a.time_limit: print('time limit'); break
print(json.dumps(dict(vars(a), best_val=best[0], test=best[1], best_ep=best[2], wall=round(time.time()-t0))))
