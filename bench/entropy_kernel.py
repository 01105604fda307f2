"""Benchmark: token log-probs + entropy from LM hidden states.

    python bench/entropy_kernel.py [--device cpu|cuda] [--quick] [--repeats R] [--json OUT]

Variants (all compute per-token log p(label) and entropy H from hidden states
h (N, D) and an LM head W (V, D)):

  floor    bare ``h @ W.T`` (the matmul alone); its fwd+bwd is the backward of
           that matmul under ``logits.sum()``
  naive    full logits, then ``log_softmax`` + ``-(p * logp).sum(-1)``
  chunked  logits ``h[i:i+c] @ W.T`` chunk by chunk under plain autograd, each
           chunk through ``entrolab.ops.entropy.logprobs_and_entropy``
  fused    ``entrolab.ops.entropy.fused_logprobs_entropy`` (custom backward that
           recomputes each chunk's logits)

The fwd+bwd loss is ``sum(logp * a) + sum(H * b)`` for fixed random a, b (so
both gradient paths are exercised).  Forward timings run under ``no_grad``.

Timing: one warm-up of every variant on a small slice of the case, then
``--repeats`` rounds in which all variants run in turn (interleaved, so load
from other processes hits all of them alike); the median is reported (min in
brackets).  Ratios are to the floor of the same pass type.

Peak extra memory: on CPU each (variant, pass) runs once in a fresh
subprocess.  Inputs are allocated in place (no temporaries), a tiny warm-up
initialises the libraries, then the process's peak-RSS mark is reset to its
current RSS (``echo 5 > /proc/self/clear_refs``) and the result is the peak
RSS after the run (``VmHWM`` in /proc/self/status) minus the RSS before it,
i.e. every byte the variant touched beyond its inputs (logits, scratch,
gradients, library workspaces).  Plain ``getrusage(RUSAGE_SELF).ru_maxrss``
is *not* used on Linux because it survives fork+exec: a child starts with the
benchmark parent's high-water mark, which hides any peak below it.  It is the
fallback where /proc is unavailable (then the children run before the parent
allocates anything big).  On CUDA: ``max_memory_allocated() - memory_allocated()``
after ``reset_peak_memory_stats``.  ``--quick`` runs only the small case, with one
warmed-up timing round.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

try:
    from entrolab.ops.entropy import (
        DEFAULT_FUSED_CHUNK,
        fused_logprobs_entropy,
        logprobs_and_entropy,
    )
except ImportError:  # running from a checkout without an editable install
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from entrolab.ops.entropy import (  # noqa: E402
        DEFAULT_FUSED_CHUNK,
        fused_logprobs_entropy,
        logprobs_and_entropy,
    )

VARIANTS = ("floor", "naive", "chunked", "fused")
PASSES = ("fwd", "fwd+bwd")


def cases(device: str, quick: bool):
    """(name, D, V, N) tuples."""
    out = [("SmolLM2-135M", 576, 49152, 2048)]
    if not quick:
        out.append(("SmolLM2-135M", 576, 49152, 8192))
        out.append(("Qwen2.5-7B", 3584, 152064, 512 if device == "cpu" else 2048))
    return out


# ---------------------------------------------------------------- variants
def run_variant(name, h, w, y, a, b, backward, chunk=DEFAULT_FUSED_CHUNK):
    """Run one variant once; returns nothing (outputs are dropped)."""
    if name == "floor":
        z = h @ w.t()
        if backward:
            z.sum().backward()
        return
    if name == "naive":
        z = h @ w.t()
        if z.dtype != torch.float32:
            z = z.float()
        logp_all = torch.log_softmax(z, dim=-1)
        lp = logp_all.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        ent = -(logp_all.exp() * logp_all).sum(-1)
    elif name == "chunked":
        lps, ents = [], []
        for i in range(0, h.shape[0], chunk):
            lp_c, ent_c = logprobs_and_entropy(h[i : i + chunk] @ w.t(), y[i : i + chunk])
            lps.append(lp_c)
            ents.append(ent_c)
        lp, ent = torch.cat(lps), torch.cat(ents)
    elif name == "fused":
        lp, ent = fused_logprobs_entropy(h, w, y, chunk_size=chunk)
    else:
        raise ValueError(name)
    if backward:
        ((lp * a).sum() + (ent * b).sum()).backward()


def make_inputs(d, v, n, dtype, device, grad, seed=0):
    """Inputs filled in place (no temporaries, so RSS baselines stay honest)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    h = torch.empty(n, d, dtype=dtype, device=device)
    w = torch.empty(v, d, dtype=dtype, device=device)
    if device == "cpu":
        h.normal_(0.0, 1.0, generator=g)
        w.normal_(0.0, 0.05, generator=g)
    else:
        h.normal_(0.0, 1.0)
        w.normal_(0.0, 0.05)
    y = torch.randint(0, v, (n,), generator=g).to(device)
    a = torch.randn(n, generator=g).to(device)
    b = torch.randn(n, generator=g).to(device)
    h.requires_grad_(grad)
    w.requires_grad_(grad)
    return h, w, y, a, b


def once(name, inputs, backward, device):
    h, w, y, a, b = inputs
    h.grad = None
    w.grad = None
    sync(device)
    t0 = time.perf_counter()
    if backward:
        run_variant(name, h, w, y, a, b, True)
    else:
        with torch.no_grad():
            run_variant(name, h, w, y, a, b, False)
    sync(device)
    dt = time.perf_counter() - t0
    h.grad = None
    w.grad = None
    return dt


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _hwm_kb():
    """Peak RSS of this process image (VmHWM), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise OSError("no VmHWM")


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _hwm_kb() <= _rss_kb() + 1024
    except OSError:
        return False


# ---------------------------------------------------------------- memory
def child_main(spec):
    """Fresh-process CPU measurement of one (case, variant, pass)."""
    d, v, n, variant, backward = spec["d"], spec["v"], spec["n"], spec["variant"], spec["bwd"]
    torch.manual_seed(0)
    inputs = make_inputs(d, v, n, torch.float32, "cpu", backward)
    # initialise MKL/OpenMP and autograd on a tiny problem
    tiny = make_inputs(d, 64, 8, torch.float32, "cpu", True, seed=1)
    for name in VARIANTS:
        once(name, tiny, True, "cpu")
        once(name, tiny, False, "cpu")
    del tiny
    gc.collect()
    use_hwm = _reset_hwm()
    base = _rss_kb()
    if use_hwm:
        hwm_before = _hwm_kb()
        dt = once(variant, inputs, backward, "cpu")
        peak = _hwm_kb()
    else:
        hwm_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        dt = once(variant, inputs, backward, "cpu")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "peak_extra_mb": max(0, peak - base) / 1024.0,
        "hwm_slack_mb": max(0, hwm_before - base) / 1024.0,
        "method": "VmHWM" if use_hwm else "ru_maxrss",
        "seconds": dt,
    }))


def cpu_memory(d, v, n, variant, backward):
    spec = json.dumps({"d": d, "v": v, "n": n, "variant": variant, "bwd": backward})
    res = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--_child", spec],
        capture_output=True, text=True, check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"memory child failed ({variant}, bwd={backward}):\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def cuda_memory(inputs, variant, backward):
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    once(variant, inputs, backward, "cuda")
    return (torch.cuda.max_memory_allocated() - base) / 2**20


# ---------------------------------------------------------------- driver
def bench_case(name, d, v, n, dtype, device, repeats, quick, log):
    rows = {}
    for backward in (False, True):
        p = PASSES[int(backward)]
        for var in VARIANTS:
            rows[(p, var)] = {"times": [], "mem": None}
    # memory: one fresh subprocess per (variant, pass)
    for backward in (False, True):
        p = PASSES[int(backward)]
        for var in VARIANTS:
            if device == "cpu":
                r = cpu_memory(d, v, n, var, backward)
                rows[(p, var)]["mem"] = r["peak_extra_mb"]
                if r["hwm_slack_mb"] > 0.05 * max(r["peak_extra_mb"], 1.0):
                    log(f"  WARNING: {var} {p}: high-water mark was already "
                        f"{r['hwm_slack_mb']:.0f} MB above the baseline ({r['method']}); "
                        "this peak is an upper bound")
            log(f"  memory {name} N={n} {p:8s} {var:8s} done")
    # timing: warmed up, interleaved rounds (quick mode too: a cold single call misleads)
    inputs_nograd = make_inputs(d, v, n, dtype, device, False)
    inputs_grad = make_inputs(d, v, n, dtype, device, True)
    warm = make_inputs(d, v, min(n, 256), dtype, device, True, seed=2)
    for var in VARIANTS:
        once(var, warm, False, device)
        once(var, warm, True, device)
    del warm
    if device == "cuda":
        for backward in (False, True):
            for var in VARIANTS:
                inp = inputs_grad if backward else inputs_nograd
                rows[(PASSES[int(backward)], var)]["mem"] = cuda_memory(inp, var, backward)
    for r in range(repeats):
        for backward in (False, True):
            inp = inputs_grad if backward else inputs_nograd
            for var in VARIANTS:
                rows[(PASSES[int(backward)], var)]["times"].append(once(var, inp, backward, device))
        log(f"  timing {name} N={n} round {r + 1}/{repeats} done")
    del inputs_nograd, inputs_grad
    gc.collect()
    out = []
    for p in PASSES:
        fl = statistics.median(rows[(p, "floor")]["times"])
        nv = rows[(p, "naive")]["mem"]
        for var in VARIANTS:
            t = rows[(p, var)]["times"]
            med = statistics.median(t)
            mem = rows[(p, var)]["mem"]
            out.append({
                "case": name, "D": d, "V": v, "N": n, "dtype": str(dtype).replace("torch.", ""),
                "pass": p, "variant": var, "seconds": med, "min_seconds": min(t),
                "x_floor": med / fl, "peak_extra_mb": mem,
                "x_naive_mem": (mem / nv) if (mem is not None and nv) else None,
            })
    return out


def print_table(results):
    hdr = (f"{'case':<14}{'N':>6} {'dtype':<9}{'pass':<9}{'variant':<9}"
           f"{'median s':>9} {'(min)':>8} {'x floor':>8} {'peak MB':>9} {'x naive':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        mem = "-" if r["peak_extra_mb"] is None else f"{r['peak_extra_mb']:.0f}"
        xm = "-" if r["x_naive_mem"] is None else f"{r['x_naive_mem']:.3f}"
        print(f"{r['case']:<14}{r['N']:>6} {r['dtype']:<9}{r['pass']:<9}{r['variant']:<9}"
              f"{r['seconds']:>9.3f} {r['min_seconds']:>8.3f} {r['x_floor']:>8.2f} {mem:>9} {xm:>8}")


def check_targets(results, quick):
    n_target = 2048 if quick else 8192
    sel = [r for r in results if r["case"] == "SmolLM2-135M" and r["N"] == n_target
           and r["dtype"] == "float32" and r["variant"] == "fused"]
    fwd = next(r for r in sel if r["pass"] == "fwd")
    fb = next(r for r in sel if r["pass"] == "fwd+bwd")
    note = " (quick run: checked at N=2048; the targets are defined at N=8192)" if quick else ""
    print(f"\nTargets, SmolLM2 size, N={n_target}, float32{note}:")
    ok1 = fwd["x_floor"] <= 1.25
    print(f"  fused forward <= 1.25x floor forward : {fwd['x_floor']:.2f}x  -> "
          f"{'MET' if ok1 else 'NOT MET'}")
    mems = [(r["pass"], r["x_naive_mem"]) for r in (fwd, fb)]
    ok2 = all(m is not None and m <= 0.125 for _, m in mems)
    txt = ", ".join(f"{p} {m:.3f}" for p, m in mems if m is not None)
    print(f"  fused peak extra memory <= 1/8 naive : {txt}  -> {'MET' if ok2 else 'NOT MET'}")
    return ok1 and ok2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--quick", action="store_true", help="small case only, 1 repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        child_main(json.loads(args._child))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda requested but CUDA is not available")
    repeats = 1 if args.quick else args.repeats
    dtypes = [torch.float32] + ([torch.bfloat16] if args.device == "cuda" else [])

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    dev_name = torch.cuda.get_device_name() if args.device == "cuda" else (
        f"CPU, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    print(f"torch {torch.__version__}, {dev_name}, fused chunk {DEFAULT_FUSED_CHUNK}, "
          f"repeats {repeats}, load avg at start {os.getloadavg()[0]:.1f}")
    t0 = time.time()
    results = []
    for dtype in dtypes:
        for name, d, v, n in cases(args.device, args.quick):
            log(f"case {name} D={d} V={v} N={n} {dtype}")
            results += bench_case(name, d, v, n, dtype, args.device, repeats, args.quick, log)
    print_table(results)
    print(f"(wall {time.time() - t0:.0f} s, load avg at end {os.getloadavg()[0]:.1f})")
    check_targets(results, args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
