#!/usr/bin/python3
"""bench_torch.py — the same work as experiments/bench_ops.c, in PyTorch (CPU).

    scripts/bench_torch.py ops      [--threads N] [--hypertape BENCH_OPS] [--rounds R] [--csv]
                                    [--match TEXT]
    scripts/bench_torch.py oneshot  [--threads N] [--hypertape BENCH_OPS] [--rounds R]
                                    [--K 1,10,50] [--T 50] [--channels 64] [--repeats 3]
                                    [--torch-tasks]
    scripts/bench_torch.py check DIR
    scripts/bench_torch.py hcmem    [--K 100]

ops      each op at the one-shot and hypercleaning shapes: forward, backward,
         backward with create_graph, and a Hessian-vector product back through
         it (median of repeats), the cases and names of bench-ops.  With
         --hypertape the bench-ops executable runs too, in alternating rounds,
         and the table shows both and their ratio (hypertape / PyTorch).
oneshot  the one-shot hyper-iteration of experiments/oneshot.c (split
         formulation, T inner steps, K-RMD, meta-batch of 4, Adam) on random
         images; --hypertape joins bench-ops --oneshot the same way, in two
         ways of using the N cores (--threads N): "intra-op", the tasks one
         after the other and each kernel on N threads (how PyTorch runs here,
         and bench-ops --oneshot without --threads), and "tasks", the
         meta-batch's tasks on N worker threads with every kernel on one
         thread (how experiments/oneshot.c runs: bench-ops --oneshot
         --threads N).  PyTorch runs intra-op; with --torch-tasks also with
         the tasks on N Python threads and each op on one ('PyTorch tasks').
check    recomputes the hypergradients written by `bench-ops --oneshot --dump
         DIR` (same λ0, same task) in float64 and prints the relative error
         per K: the evidence that this script computes what hypertape does.
hcmem    the bytes autograd saves per recorded hypercleaning step (n = 5000,
         d = 785, C = 10), counted with saved_tensors_hooks (each storage
         once), for comparison with bench-hyperclean's tape peak.

Threads: torch.set_num_threads(N) here and OPENBLAS_NUM_THREADS=N for the
hypertape run (default 1).  Floats: float32, as the float build.  This is
Debian's python3-torch (1.13) for /usr/bin/python3; without torch the script
says so and exits 0.  Nothing here is run by the tests.
"""
import argparse
import concurrent.futures
import csv
import io
import math
import os
import statistics
import subprocess
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the benchmark is optional: say why nothing ran
    torch = None

BN_EPS = 1e-5
N_OUT, N_CLASSES, HC_CLASSES, HC_REG = 64, 5, 10, 1e-3

# ---- the op cases (experiments/bench_ops.c, same order and names) ---------

CASES = (
    [("conv2d", "conv", s) for s in [(5, 1, 28, 28), (75, 1, 28, 28), (5, 64, 14, 14),
                                     (75, 64, 14, 14), (5, 64, 7, 7), (75, 64, 7, 7),
                                     (5, 64, 3, 3), (75, 64, 3, 3)]]
    + [("maxpool2d", "pool", s) for s in [(5, 64, 28, 28), (75, 64, 28, 28), (5, 64, 14, 14),
                                          (75, 64, 14, 14), (5, 64, 7, 7), (75, 64, 7, 7),
                                          (5, 64, 3, 3), (75, 64, 3, 3)]]
    + [("batchnorm", "bn", s) for s in [(5, 64, 14, 14), (75, 64, 14, 14), (5, 64, 7, 7),
                                        (75, 64, 7, 7), (5, 64, 3, 3), (75, 64, 3, 3),
                                        (5, 64, 1, 1), (75, 64, 1, 1)]]
    + [("relu", "relu", s) for s in [(5, 64, 14, 14), (75, 64, 14, 14), (5, 64, 3, 3),
                                     (75, 64, 7, 7)]]
    + [("add_bias", "bias", s) for s in [(5, 64, 28, 28), (75, 64, 7, 7)]]
    + [("mul", "mul", s) for s in [(5, 64, 7, 7), (75, 64, 7, 7)]]
    + [("linear", "linear", (5, 64)), ("linear", "linear", (75, 64)),
       ("cross_entropy", "ce", (5, 5)), ("cross_entropy", "ce", (75, 5)),
       ("hc_matmul", "hc_matmul", (5000, 785)), ("hc_cross_entropy", "hc_ce", (5000, 10)),
       ("hc_sigmoid", "hc_sigmoid", (5000,)), ("hc_sqnorm", "hc_sqnorm", (785, 10)),
       ("hc_inner", "hc_inner", (5000, 785))]
)
TIMES = ["fwd", "bwd", "bwd_rec", "hvp"]


def shape_name(s):
    return "x".join(str(d) for d in s)


def uniform(shape, lo, hi, grad=True):
    t = torch.rand(*shape, dtype=torch.float32) * (hi - lo) + lo
    return t.requires_grad_(grad)


def make_case(kind, s):
    """(inputs wanting gradients, function of them)."""
    if kind == "conv":
        b = math.sqrt(6.0 / (s[1] * 9))
        xs = [uniform(s, -1, 1), uniform((N_OUT, s[1], 3, 3), -b, b), uniform((N_OUT,), -.1, .1)]
        return xs, lambda x, w, bb: F.conv2d(x, w, bb, padding=1)
    if kind == "pool":
        return [uniform(s, -1, 1)], lambda x: F.max_pool2d(x, 2, 2)
    if kind == "bn":
        xs = [uniform(s, -1, 1), uniform((s[1],), .5, 1.5), uniform((s[1],), -.5, .5)]
        return xs, lambda x, g, b: F.batch_norm(x, None, None, g, b, True, 0.0, BN_EPS)
    if kind == "relu":
        return [uniform(s, -1, 1)], F.relu
    if kind == "bias":
        return [uniform(s, -1, 1), uniform((1, s[1], 1, 1), -1, 1)], lambda x, b: x + b
    if kind == "mul":
        return [uniform(s, -1, 1), uniform(s, -1, 1)], lambda x, y: x * y
    if kind == "linear":
        xs = [uniform(s, -1, 1), uniform((N_CLASSES, s[1]), -.3, .3), uniform((N_CLASSES,), -.1, .1)]
        return xs, F.linear
    if kind == "ce":
        y = torch.randint(0, s[1], (s[0],))
        return [uniform(s, -2, 2)], lambda z: F.cross_entropy(z, y)
    if kind == "hc_matmul":
        X = uniform(s, 0, 1, grad=False)
        return [uniform((s[1], HC_CLASSES), -.01, .01)], lambda w: X @ w
    if kind == "hc_ce":
        y = torch.randint(0, s[1], (s[0],))
        return ([uniform(s, -2, 2), uniform((s[0],), -1, 1)],
                lambda z, lam: (torch.sigmoid(lam) * F.cross_entropy(z, y, reduction="none")).mean())
    if kind == "hc_sigmoid":
        return [uniform(s, -3, 3)], torch.sigmoid
    if kind == "hc_sqnorm":
        return [uniform(s, -1, 1)], lambda w: (w * w).sum()
    if kind == "hc_inner":
        X = uniform(s, 0, 1, grad=False)
        y = torch.randint(0, HC_CLASSES, (s[0],))

        def g(w, lam):
            ce = (torch.sigmoid(lam) * F.cross_entropy(X @ w, y, reduction="none")).mean()
            return ce + HC_REG * (w * w).sum()
        return [uniform((s[1], HC_CLASSES), -.01, .01), uniform((s[0],), -1, 1)], g
    raise ValueError(kind)


def one_repeat(f, xs, gy, v):
    t0 = time.perf_counter()
    y = f(*xs)
    t1 = time.perf_counter()
    torch.autograd.grad(y, xs, gy)
    t2 = time.perf_counter()
    y = f(*xs)
    t3 = time.perf_counter()
    gx = torch.autograd.grad(y, xs, gy, create_graph=True)
    t4 = time.perf_counter()
    # A gradient that does not depend on the inputs has no graph: nothing to do.
    pairs = [(g, vi) for g, vi in zip(gx, v) if g.requires_grad]
    if pairs:
        torch.autograd.grad([p[0] for p in pairs], xs, [p[1] for p in pairs], allow_unused=True)
    t5 = time.perf_counter()
    return [t1 - t0, t2 - t1, t4 - t3, t5 - t4]


def time_case(kind, s, repeats):
    torch.manual_seed(1234)
    xs, f = make_case(kind, s)
    with torch.no_grad():
        y = f(*xs)
    gy = torch.randn_like(y)
    v = [torch.randn_like(x) for x in xs]
    one_repeat(f, xs, gy, v)  # warm-up
    samples, start = [], time.perf_counter()
    while len(samples) < (repeats or 1000) and (repeats or len(samples) < 5
                                                 or time.perf_counter() - start < 0.25):
        samples.append(one_repeat(f, xs, gy, v))
    return [statistics.median(col) for col in zip(*samples)], len(samples)


def selected(match):
    """The cases whose "op shape" contains match (bench-ops --match's rule)."""
    return [c for c in CASES if not match or match in f"{c[0]} {shape_name(c[2])}"]


def torch_ops(repeats, match):
    """{(op, shape): [fwd, bwd, bwd_rec, hvp] seconds}"""
    out = {}
    for op, kind, s in selected(match):
        t, _ = time_case(kind, s, repeats)
        out[(op, shape_name(s))] = t
    return out


def hypertape_ops(exe, threads, repeats, match):
    cmd = [exe, "--csv"] + (["--repeats", str(repeats)] if repeats else [])
    cmd += ["--match", match] if match else []
    rows = run_csv(cmd, threads)
    return {(r["op"], r["shape"]): [float(r[k + "_s"]) for k in TIMES] for r in rows}


def run_csv(cmd, threads):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"bench_torch.py: {' '.join(cmd)} failed:\n{p.stderr}")
    return list(csv.DictReader(io.StringIO(p.stdout)))


def median_rounds(rounds):
    return {k: [statistics.median(r[k][i] for r in rounds) for i in range(len(rounds[0][k]))]
            for k in rounds[0]}


def cmd_ops(a):
    ht_rounds, pt_rounds = [], []
    for r in range(a.rounds):
        if a.hypertape:
            ht_rounds.append(hypertape_ops(a.hypertape, a.threads, a.repeats, a.match))
        pt_rounds.append(torch_ops(a.repeats, a.match))
        print(f"bench_torch.py: round {r + 1} of {a.rounds} done", file=sys.stderr)
    pt = median_rounds(pt_rounds)
    ht = median_rounds(ht_rounds) if a.hypertape else None
    if a.csv:
        head = ["op", "shape"] + [f"torch_{k}_s" for k in TIMES]
        if ht:
            head += [f"ht_{k}_s" for k in TIMES] + ["ratio_fwd_bwd", "ratio_rec_hvp"]
        print(",".join(head))
    else:
        print(f"# median of {a.rounds} round(s), {a.threads} thread(s); ms; "
              "ratio = hypertape / PyTorch; fb = fwd + bwd, rh = fwd + bwd_rec + hvp")
        cols = "%-17s %-14s" + " %9s" * 4
        head = ["op", "shape", "pt fwd", "pt bwd", "pt rec", "pt hvp"]
        if ht:
            cols += " %9s" * 4 + " %8s %8s"
            head += ["ht fwd", "ht bwd", "ht rec", "ht hvp", "ratio fb", "ratio rh"]
        print(cols % tuple(head))
    for op, kind, s in selected(a.match):
        key = (op, shape_name(s))
        row = [op, key[1]] + pt[key]
        if ht:
            h = ht[key]
            p = pt[key]
            row += h + [(h[0] + h[1]) / (p[0] + p[1]), (h[0] + h[2] + h[3]) / (p[0] + p[2] + p[3])]
        if a.csv:
            print(",".join(str(x) if isinstance(x, str) else f"{x:.9g}" for x in row))
        else:
            vals = [f"{1e3 * x:.4f}" for x in row[2:10]] + [f"{x:.2f}" for x in row[10:]]
            print(cols % tuple(row[:2] + vals))


# ---- the one-shot hyper-iteration (experiments/oneshot_problem.c) ----------

def block(x, W, b, gamma, beta):
    """conv 3×3 (same padding) -> 2×2 max-pool -> batch-norm (training) -> relu"""
    y = F.conv2d(x, W, b, padding=(W.shape[2] - 1) // 2)
    y = F.max_pool2d(y, 2, 2)
    return F.relu(F.batch_norm(y, None, None, gamma, beta, True, 0.0, BN_EPS))


def rep_forward(x, rep):
    return block(block(x, *rep[0:4]), *rep[4:8])


def task_forward(h, w):
    h = block(block(h, *w[0:4]), *w[4:8])
    return F.linear(h.reshape(h.shape[0], -1), w[8], w[9])


LAYER_OF = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]  # task tensor -> trained layer (ρ)


def init_lambda(channels, dtype):
    """λ0 as os_hyper_init makes it (He / Glorot uniform, ones, zeros; ρ0 = 0.1, γ0 = 0.03)."""
    shapes = []
    C = 1
    for b in range(4):
        shapes += [("he", (channels, C, 3, 3)), ("zeros", (channels,)), ("ones", (channels,)),
                   ("zeros", (channels,))]
        C = channels
    shapes += [("glorot", (5, channels)), ("zeros", (5,))]
    lam = []
    for kind, s in shapes:
        if kind == "he" or kind == "glorot":
            fan_in = math.prod(s[1:])
            fan_out = s[0] * math.prod(s[2:])
            bound = math.sqrt(6 / fan_in) if kind == "he" else math.sqrt(6 / (fan_in + fan_out))
            t = (torch.rand(*s, dtype=dtype) * 2 - 1) * bound
        else:
            t = (torch.ones if kind == "ones" else torch.zeros)(*s, dtype=dtype)
        lam.append(t)
    nu0 = math.log(math.expm1(0.1))
    lam += [torch.tensor(nu0, dtype=dtype) for _ in range(3)] + [torch.tensor(0.03, dtype=dtype)]
    return [t.requires_grad_() for t in lam]


def hypergrad(lam, x_s, y_s, x_q, y_q, K, T):
    """os_task_hypergrad: K-RMD (K >= T: full) of the query loss, split formulation."""
    rep, cen, nu, gamma = lam[0:8], lam[8:18], lam[18:21], lam[21]
    h_s, h_q = rep_forward(x_s, rep), rep_forward(x_q, rep)

    def inner(w):
        g = F.cross_entropy(task_forward(h_s, w), y_s)
        sq = [None, None, None]
        for j, wj in enumerate(w):
            d = wj - cen[j]
            s = (d * d).sum()
            sq[LAYER_OF[j]] = s if sq[LAYER_OF[j]] is None else sq[LAYER_OF[j]] + s
        for l in range(3):
            g = g + F.softplus(nu[l]) * sq[l]
        return g

    full = K >= T
    w = [c * 1.0 for c in cen] if full else [c.detach().clone() for c in cen]
    for t in range(1, T + 1):
        detached = t <= T - K
        if detached or not w[0].requires_grad:
            w = [wi.detach().requires_grad_() for wi in w]  # ad_leaf: the path is cut here
        gw = torch.autograd.grad(inner(w), w, create_graph=not detached)
        if detached:
            with torch.no_grad():
                w = [wi - gamma * gi for wi, gi in zip(w, gw)]
        else:
            w = [wi - gamma * gi for wi, gi in zip(w, gw)]
    f = F.cross_entropy(task_forward(h_q, w), y_q)
    return torch.autograd.grad(f, lam), f.item()


def random_task(gen, dtype):
    x_s = torch.rand(5, 1, 28, 28, generator=gen, dtype=dtype)
    x_q = torch.rand(75, 1, 28, 28, generator=gen, dtype=dtype)
    return x_s, torch.arange(5) % 5, x_q, torch.arange(75) % 5


def torch_oneshot(a, K, tasks=False):
    """Median seconds of a hyper-iteration (after one untimed): wall clock and process CPU.
    tasks: the meta-batch's tasks on a.threads Python threads, each op on one thread (the
    tasks drawn in order first and their hypergradients summed in task order, as bench-ops
    --threads does); otherwise the tasks in turn, each op on a.threads threads."""
    pool = None
    if tasks:
        torch.set_num_threads(1)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=a.threads)
    try:
        return torch_oneshot_run(a, K, pool)
    finally:
        if pool:
            pool.shutdown()
            torch.set_num_threads(a.threads)


def torch_oneshot_run(a, K, pool):
    torch.manual_seed(1)
    lam = init_lambda(a.channels, torch.float32)
    opt = torch.optim.Adam(lam, lr=1e-2)
    gen = torch.Generator().manual_seed(99)
    secs, cpus = [], []
    for r in range(a.repeats + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        gsum = [torch.zeros_like(p) for p in lam]
        if pool:
            batch = [random_task(gen, torch.float32) for _ in range(a.meta_batch)]
            gs = list(pool.map(lambda t: hypergrad(lam, *t, K, a.T)[0], batch))
        else:
            gs = (hypergrad(lam, *random_task(gen, torch.float32), K, a.T)[0]
                  for _ in range(a.meta_batch))
        for g in gs:
            for s, gi in zip(gsum, g):
                s += gi / a.meta_batch
        for p, s in zip(lam, gsum):
            p.grad = s
        opt.step()
        with torch.no_grad():
            lam[21].clamp_(1e-3, 2.0)
        if r > 0:
            secs.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    return statistics.median(secs), statistics.median(cpus)


def cmd_oneshot(a):
    Ks = [int(k) for k in a.K.split(",")] if a.K else sorted({k for k in (1, 10, a.T) if k <= a.T})
    ht_rounds, pt_rounds, pt_task_rounds = [], [], []
    for r in range(a.rounds):
        if a.hypertape:
            cmd = [a.hypertape, "--oneshot", "--csv", "--K", ",".join(map(str, Ks)),
                   "--T", str(a.T), "--channels", str(a.channels), "--meta-batch",
                   str(a.meta_batch), "--repeats", str(a.repeats)]
            # intra-op (as PyTorch), then the meta-batch's tasks on a.threads workers
            ht_rounds.append(tuple({int(row["K"]): (float(row["median_s"]),
                                                    float(row.get("cpu_median_s", "nan")))
                                    for row in run_csv(c, a.threads)}
                                   for c in (cmd, cmd + ["--threads", str(a.threads)])))
        pt_rounds.append({K: torch_oneshot(a, K) for K in Ks})
        if a.torch_tasks:
            pt_task_rounds.append({K: torch_oneshot(a, K, tasks=True) for K in Ks})
        print(f"bench_torch.py: round {r + 1} of {a.rounds} done", file=sys.stderr)
    print(f"# one-shot hyper-iteration: {a.channels} channels, T = {a.T}, meta-batch "
          f"{a.meta_batch}; median of {a.repeats} per round, median of {a.rounds} round(s); "
          f"{a.threads} thread(s); wall clock and process CPU seconds")
    if a.hypertape:
        print(f"# PyTorch and 'intra-op': the tasks in turn, each kernel on {a.threads} thread(s); "
              f"'tasks': hypertape with the {a.meta_batch} tasks on {a.threads} worker thread(s), "
              f"each kernel on 1 (bench-ops --oneshot --threads {a.threads}, as the oneshot "
              f"program runs); ratio = hypertape / PyTorch")
    if a.torch_tasks:
        print(f"# 'PyTorch tasks': PyTorch with the {a.meta_batch} tasks on {a.threads} Python "
              f"thread(s), each op on 1 (torch.set_num_threads(1)); not in the ratios")
    head = "%6s %10s %10s" % ("K", "PyTorch s", "cpu s")
    if a.torch_tasks:
        head += " %14s %10s" % ("PyTorch tasks", "cpu s")
    if a.hypertape:
        head += " %12s %10s %8s %8s" % ("intra-op s", "cpu s", "ratio", "cpu ratio")
        head += " %12s %10s %8s %8s" % ("tasks s", "cpu s", "ratio", "cpu ratio")
    print(head)
    for K in Ks:
        p = [statistics.median(r[K][i] for r in pt_rounds) for i in (0, 1)]
        line = "%6d %10.3f %10.3f" % (K, p[0], p[1])
        if a.torch_tasks:
            line += " %14.3f %10.3f" % tuple(statistics.median(r[K][i] for r in pt_task_rounds)
                                              for i in (0, 1))
        if a.hypertape:
            pers = []
            for way in (0, 1):
                h = [statistics.median(r[way][K][i] for r in ht_rounds) for i in (0, 1)]
                line += " %12.3f %10.3f %8.2f %8.2f" % (h[0], h[1], h[0] / p[0], h[1] / p[1])
                pers.append(" ".join("%.3f/%.3f" % (hr[way][K][0], pr[K][0])
                                     for hr, pr in zip(ht_rounds, pt_rounds)))
            line += "   (wall, ht/pt per round: intra-op %s; tasks %s)" % tuple(pers)
        print(line)


def read_dump(d):
    with open(os.path.join(d, "manifest.txt")) as f:
        lines = f.read().split("\n")
    cfg = lines[0].split()[1:]
    cfg = dict(zip(cfg[0::2], cfg[1::2]))
    t = {}
    for ln in lines[1:]:
        if not ln.strip():
            continue
        name, rank, *dims = ln.split()
        data = torch.from_file(os.path.join(d, name + ".f64"), size=math.prod(map(int, dims)),
                               dtype=torch.float64)
        t[name] = data.reshape([int(x) for x in dims])
    return cfg, t


def cmd_check(a):
    cfg, t = read_dump(a.dir)
    T = int(cfg["T"])
    lam = [t["lam_%02d" % i].clone().requires_grad_() for i in range(22)]
    x_s, x_q = t["x_s"], t["x_q"]
    y_s, y_q = t["y_s"].long(), t["y_q"].long()
    Ks = sorted({int(n.split("_")[1][1:]) for n in t if n.startswith("grad_K")})
    print(f"# hypertape ({cfg['real']} build) vs this script in float64: {cfg['channels']} "
          f"channels, T = {T}; relative error ‖ht − pt‖ / ‖pt‖ over all of λ, and the tensor whose ‖ht − pt‖ is largest (also / ‖pt‖)")
    worst = 0.0
    for K in Ks:
        g, f = hypergrad(lam, x_s, y_s, x_q, y_q, K, T)
        ht = [t["grad_K%d_%02d" % (K, i)] for i in range(22)]
        num = math.sqrt(sum(float(((h - p) ** 2).sum()) for h, p in zip(ht, g)))
        den = math.sqrt(sum(float((p ** 2).sum()) for p in g))
        per = [float((h - p).norm()) / den for h, p in zip(ht, g)]
        i = max(range(22), key=lambda k: per[k])
        print(f"K = {K:3d}: outer loss {f:.6f}, relative error {num / den:.3g} "
              f"(largest share: tensor {i}, {per[i]:.3g})")
        worst = max(worst, num / den)
    return worst


# ---- hypercleaning: bytes autograd saves per recorded step -----------------

def cmd_hcmem(a):
    n, d, C = 5000, 785, 10
    torch.manual_seed(1)
    X = torch.rand(n, d)
    y = torch.randint(0, C, (n,))
    lam = torch.zeros(n, requires_grad=True)
    saved = {}

    def pack(t):
        s = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
        if s.data_ptr() != X.data_ptr():  # X is the data set, not a saved intermediate
            saved[s.data_ptr()] = s.nbytes() if hasattr(s, "nbytes") else s.size() * t.element_size()
        return t

    W = torch.zeros(d, C).requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        for _ in range(a.K):
            g = (torch.sigmoid(lam) * F.cross_entropy(X @ W, y, reduction="none")).mean() \
                + HC_REG * (W * W).sum()
            gw, = torch.autograd.grad(g, W, create_graph=True)
            W = W - 0.25 * gw
    total = sum(saved.values())
    print(f"hypercleaning, K = {a.K} recorded steps (n = {n}, d = {d}, C = {C}, float32): "
          f"autograd saved {total / 1e6:.1f} MB in {len(saved)} storages, "
          f"{total / a.K / 1e6:.3f} MB per step (X itself not counted)")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("ops", "oneshot"):
        s = sub.add_parser(name)
        s.add_argument("--threads", type=int, default=1,
                       help="cores to use: PyTorch's threads and hypertape's OpenBLAS threads "
                            "(intra-op); oneshot: also hypertape's task workers ('tasks' rows)")
        s.add_argument("--hypertape", help="the bench-ops executable to run alongside")
        s.add_argument("--rounds", type=int, default=3)
        s.add_argument("--csv", action="store_true")
        if name == "ops":
            s.add_argument("--repeats", type=int, default=0, help="0: at least 5 and 0.25 s")
            s.add_argument("--match", default=None,
                           help="keep the cases whose 'op shape' contains TEXT (as bench-ops)")
        else:
            s.add_argument("--K", default=None)
            s.add_argument("--T", type=int, default=50)
            s.add_argument("--channels", type=int, default=64)
            s.add_argument("--meta-batch", type=int, default=4)
            s.add_argument("--repeats", type=int, default=3)
            s.add_argument("--torch-tasks", action="store_true",
                           help="also PyTorch with the meta-batch's tasks on --threads Python "
                                "threads, each op on one thread (the 'PyTorch tasks' rows)")
    s = sub.add_parser("check")
    s.add_argument("dir")
    s = sub.add_parser("hcmem")
    s.add_argument("--K", type=int, default=100)
    a = p.parse_args()
    if torch is None:
        print("bench_torch.py: PyTorch is not installed for this Python (Debian: python3-torch, "
              "for /usr/bin/python3); skipped", file=sys.stderr)
        return 0
    torch.set_num_threads(getattr(a, "threads", 1))
    print(f"bench_torch.py: PyTorch {torch.__version__}, {torch.get_num_threads()} thread(s)",
          file=sys.stderr)
    if a.cmd == "ops":
        cmd_ops(a)
    elif a.cmd == "oneshot":
        cmd_oneshot(a)
    elif a.cmd == "check":
        cmd_check(a)
    else:
        cmd_hcmem(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
