"""Run reports: PNG figures and one self-contained ``report.html`` per run, and ``compare.html`` across runs.

Figures are drawn with matplotlib's object-oriented API on the Agg canvas (``matplotlib.figure.Figure``; pyplot and
its global backend are never touched, so this is safe inside notebooks and threads). Each PNG is written to the
output folder and also inlined in the HTML as a base64 ``data:`` URI, so the HTML opens anywhere with no other file
and no network. A figure whose metrics the run did not log is skipped with a note in the report, never an error; a
run directory that is missing or has no metrics is a :class:`~entrolab.analysis.run.RunDirError`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .law import (
    PAPER_FIT_FRACTION,
    PAPER_FORECAST_FINAL_ERROR,
    PAPER_FORECAST_RMSE,
    fit_law,
    forecast,
    law_points,
)
from .run import PathLike, Run, RunDirError, load_run
from .stats import pearson, spearman

COV_TAIL_KEYS = ("dynamics/cov_top_0.02pct", "dynamics/cov_top_0.2pct", "dynamics/cov_top_2pct",
                 "dynamics/cov_top_20pct")
# Secondary training-health panels, drawn when logged: (title, keys).
HEALTH_PANELS = (
    ("response length (tokens)", ("response/length_mean",)),
    ("high-entropy token fraction", ("entropy/high_token_frac",)),
    ("clipped token fraction", ("clip/frac_low", "clip/frac_high", "clip/frac_cov")),
    ("KL to reference", ("kl/ref",)),
    ("gradient norm", ("update/grad_norm",)),
    ("evaluation", ("eval/accuracy", "eval/mean_at_n", "eval/pass_at_k")),
    ("law ceiling refitted during training", ("law/ceiling",)),
    ("per-token ΔH correlation (pred. vs. actual)", ("dynamics/delta_H_token_corr",)),
)


# ---------------------------------------------------------------------------------------------------------------------
# Figure and HTML helpers


def _new_figure(w: float = 7.0, h: float = 4.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


@dataclass
class _Fig:
    name: str  # file name, e.g. "law.png"
    title: str
    caption: str
    path: Path
    b64: str


def _save(fig, out_dir: Path, name: str, title: str, caption: str) -> _Fig:
    path = out_dir / name
    fig.savefig(path, format="png")
    return _Fig(name=name, title=title, caption=caption, path=path,
                b64=base64.b64encode(path.read_bytes()).decode("ascii"))


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _figure_html(f: _Fig) -> str:
    stem = f.name.rsplit(".", 1)[0]
    return (f'<figure id="fig-{html.escape(stem)}"><img src="data:image/png;base64,{f.b64}" '
            f'alt="{html.escape(f.title)}" data-file="{html.escape(f.name)}">'
            f"<figcaption><b>{html.escape(f.title)}.</b> {html.escape(f.caption)} "
            f'<span class="file">({html.escape(f.name)})</span></figcaption></figure>')


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;max-width:1100px;margin:24px auto;
padding:0 16px;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
.meta{color:#666;font-size:.9em}table{border-collapse:collapse;margin:8px 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
figure{margin:12px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.88em;color:#444;margin-top:4px}
.file{color:#999}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:8px 0;font-size:.92em}
.tokens{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-word;font-size:.9em;
border:1px solid #ddd;padding:8px;background:#fff;line-height:1.7}.tokens span{border-radius:2px}
.legend{display:inline-block;width:180px;height:12px;vertical-align:middle;border:1px solid #ccc;
background:linear-gradient(to right,rgb(255,255,255),rgb(255,200,80),rgb(220,40,30))}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:.85em}
"""


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2:
        return 0.0
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


# ---------------------------------------------------------------------------------------------------------------------
# The figures of one run. Each returns a _Fig, or a str (the note saying why it was skipped).


def _fig_entropy_reward(run: Run, out: Path):
    s_h, h = run.series("entropy/mean")
    reward_keys = [k for k in ("reward/mean", "reward/accuracy", "eval/accuracy") if run.has(k)]
    if not s_h.size and not reward_keys:
        return "entropy and reward vs step skipped: the run logs neither entropy/mean nor any reward metric"
    fig = _new_figure(7.5, 5.2)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    if s_h.size:
        ax1.plot(s_h, h, color="C0", label="entropy/mean")
        if run.has("entropy/p10") and run.has("entropy/p90"):
            s, lo, hi = run.paired("entropy/p10", "entropy/p90")
            ax1.fill_between(s, lo, hi, color="C0", alpha=0.15, label="p10–p90 of token entropy")
        if run.has("entropy/p50"):
            ax1.plot(*run.series("entropy/p50"), color="C0", ls=":", lw=1, label="entropy/p50")
        ax1.legend(fontsize=8)
    else:
        ax1.text(0.5, 0.5, "entropy/mean not logged", ha="center", va="center", transform=ax1.transAxes)
    ax1.set_ylabel("policy entropy (nats)")
    for i, k in enumerate(reward_keys):
        s, v = run.series(k)
        ax2.plot(s, v, color=f"C{i + 1}", marker="o" if k.startswith("eval/") else None, ms=3, label=k)
    if reward_keys:
        ax2.legend(fontsize=8)
    else:
        ax2.text(0.5, 0.5, "no reward metric logged", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_xlabel("RL step")
    ax2.set_ylabel("reward / accuracy")
    return _save(fig, out, "entropy_reward.png", "Entropy and reward over training",
                 "Top: token-mean policy entropy of the sampled training batch (band: 10th–90th percentile of "
                 "token entropies). Bottom: training reward and accuracy, and greedy evaluation accuracy.")


def _fig_law(run: Run, out: Path, summary: dict):
    try:
        key, steps, H, R, note = law_points(run)
        fit = fit_law(H, R)
    except ValueError as e:
        return f"entropy–performance law skipped: {e}"
    summary["law"] = {"r_key": key, **fit.to_dict()}
    fig = _new_figure(6.5, 4.4)
    ax = fig.subplots()
    sc = ax.scatter(H, R, c=steps, cmap="viridis", s=18, zorder=3)
    fig.colorbar(sc, ax=ax, label="RL step")
    hh = np.linspace(0.0, max(float(H.max()) * 1.05, 1e-3), 200)
    ax.plot(hh, fit.predict(hh), color="C3", lw=2, label=f"R = −{fit.a:.3g}·exp(H) + {fit.b:.3g}")
    ax.axhline(fit.ceiling, color="0.3", ls="--", lw=1,
               label=f"ceiling −a+b = {fit.ceiling:.3f} ± {fit.ceiling_se:.2g}")
    ax.plot([0.0], [fit.ceiling], marker="*", ms=12, color="C3", zorder=4)
    ax.set_xlabel("policy entropy H (nats)")
    ax.set_ylabel(key)
    ax.set_title(f"a = {fit.a:.3g} ± {fit.a_se:.2g}, b = {fit.b:.3g} ± {fit.b_se:.2g}, R² = {fit.r2:.3f}",
                 fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    caption = (f"Each point is one step ({key} vs. the training-batch entropy/mean of that step). The law "
               "R = −a·exp(H) + b (2505.22617 Eq. 6) is fitted by linear least squares in exp(H); its value at "
               "H = 0 is the predicted ceiling.")
    if note:
        caption += " Note: " + note + "."
    return _save(fig, out, "law.png", "Entropy–performance law", caption)


def _fig_forecast(run: Run, out: Path, summary: dict, fit_fraction: float):
    try:
        key, steps, H, R, _ = law_points(run)
        fc = forecast(H, R, fit_fraction=fit_fraction, steps=steps)
    except ValueError as e:
        return f"forecast skipped: {e}"
    summary["forecast"] = {"r_key": key, **fc.to_dict()}
    fig = _new_figure(7.0, 4.0)
    ax = fig.subplots()
    ax.axvspan(steps[0], steps[fc.n_fit - 1], color="0.85", label=f"fit window (first {fc.n_fit} points)")
    ax.plot(steps, R, "o", ms=3, color="C0", label=f"actual {key}")
    ax.plot(steps[: fc.n_fit], fc.fit.predict(H[: fc.n_fit]), color="C3", lw=1, ls=":")
    ax.plot(fc.forecast_steps, fc.predicted, color="C3", lw=2, label="forecast from entropy")
    ax.set_xlabel("RL step")
    ax.set_ylabel(key)
    ax.set_title(f"forecast RMSE {fc.rmse:.4f}, final-step error {fc.final_error:.4f}", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out, "forecast.png", "Forecast of performance from early steps",
                 f"The law is fitted on the first {fit_fraction:.0%} of points ({fc.n_fit}) and predicts R for the "
                 "rest from their entropy alone. Paper reference (2505.22617 §2.4): RMSE "
                 f"{PAPER_FORECAST_RMSE['math']:.1%} math / {PAPER_FORECAST_RMSE['code']:.1%} code, final-step error "
                 f"{PAPER_FORECAST_FINAL_ERROR['math']:.1%} / {PAPER_FORECAST_FINAL_ERROR['code']:.1%}.")


def _fig_dynamics(run: Run, out: Path, summary: dict):
    fig = _new_figure(5.8, 4.6)
    if run.has("dynamics/predicted_delta_H") and run.has("dynamics/actual_delta_H"):
        steps, x, y = run.paired("dynamics/predicted_delta_H", "dynamics/actual_delta_H")
        if x.size < 2:
            return "predicted vs. actual ΔH skipped: fewer than 2 steps log both"
        mode, xl, yl = "measured", "predicted ΔH (Lemma 1, measured Δz)", "actual ΔH (same batch, after update)"
        caption = ("Each point is one step: the first-order prediction −Cov_π(log π, Δz) with the measured logit "
                   "change, against the exact entropy change on the same batch after the update. Dashed: y = x.")
    elif run.has("dynamics/cov_mean") and run.has("entropy/mean"):
        s_c, cov = run.series("dynamics/cov_mean")
        s_h, h = run.series("entropy/mean")
        hmap = dict(zip(s_h.tolist(), h.tolist()))
        nxt = {a: b for a, b in zip(s_h[:-1].tolist(), s_h[1:].tolist())}
        pts = [(s, c, -(hmap[nxt[s]] - hmap[s])) for s, c in zip(s_c.tolist(), cov.tolist()) if s in nxt]
        if len(pts) < 2:
            return "ΔH proxy skipped: fewer than 2 consecutive steps log dynamics/cov_mean and entropy/mean"
        steps, x, y = (np.asarray(v, dtype=np.float64) for v in zip(*pts))
        mode, xl, yl = "proxy", "dynamics/cov_mean", "−ΔH proxy: −(H[next step] − H[step])"
        caption = ("actual ΔH was not measured (diagnostics.measure_delta_h off), so this is the proxy: the mean "
                   "token covariance of each step against the observed entropy drop to the next logged step, which "
                   "is measured on a different batch and is noisier. The theory predicts a positive relation "
                   "(2505.22617 Theorems 1–2).")
    else:
        return ("ΔH dynamics skipped: the run logs neither dynamics/predicted_delta_H with dynamics/actual_delta_H "
                "nor dynamics/cov_mean")
    pr, sr = pearson(x, y), spearman(x, y)
    summary["dynamics"] = {"mode": mode, "pearson": pr, "spearman": sr, "n": int(x.size)}
    ax = fig.subplots()
    sc = ax.scatter(x, y, c=steps, cmap="viridis", s=18)
    fig.colorbar(sc, ax=ax, label="RL step")
    if mode == "measured":
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    else:
        ax.axhline(0, color="0.7", lw=0.8)
        ax.axvline(0, color="0.7", lw=0.8)
        ax.text(0.02, 0.98, "PROXY: actual ΔH not measured", transform=ax.transAxes, fontsize=9, color="C3",
                va="top", bbox={"facecolor": "white", "edgecolor": "C3", "alpha": 0.85})
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.set_title(f"Pearson {pr:.3f}, Spearman {sr:.3f} (n = {x.size})", fontsize=10)
    title = "Predicted vs. actual entropy change" if mode == "measured" else "Covariance vs. entropy drop (proxy)"
    return _save(fig, out, "dynamics.png", title, caption)


def _fig_dynamics_check(report, out: Path, summary: dict):
    summary["dynamics_check"] = report.to_dict()
    fig = _new_figure(5.8, 4.6)
    ax = fig.subplots()
    x, y = report.predicted, report.actual
    ax.scatter(x, y, s=8, alpha=0.6)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("predicted ΔH per state: −Cov_π(log π, Δz)")
    ax.set_ylabel("exact ΔH per state")
    ax.set_title(f"Pearson {report.pearson:.4f}, Spearman {report.spearman:.4f}\n"
                 f"relative error of ΣΔH {report.rel_error_sum:.2%}, per state {report.rel_error_states:.2%}",
                 fontsize=10)
    optimizer = getattr(report, "optimizer", "sgd")
    source = getattr(report, "source", "")
    rewards = ("" if getattr(report, "reward_mean", None) is None else
               f", mean reward {report.reward_mean:.3g}, {report.mixed_groups} of {report.n_prompts} groups with "
               "mixed rewards")
    return _save(fig, out, "dynamics_check.png",
                 f"Dynamics check on the model (one {optimizer} policy-gradient step)",
                 f"{report.n_states} states from {report.n_responses} sampled responses"
                 f"{' (' + source + ')' if source else ''}; lr {report.lr:g}, {report.advantage_mode} advantages"
                 f"{rewards}; mean |Δz| {report.mean_abs_delta_logit:.3g}. Lemma 1 of 2505.22617 predicts each "
                 "state's entropy change from the logit change.")


def write_dynamics_check(report, out_dir: PathLike) -> dict[str, Path]:
    """Write ``dynamics_check.png`` and ``dynamics_check.json`` (the report's numbers and the per-state predicted
    and exact ΔH) for a :class:`~entrolab.analysis.dynamics_check.DynamicsReport`, without a run directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    fig = _fig_dynamics_check(report, out, summary)
    data = {**summary["dynamics_check"], "predicted": report.predicted.tolist(), "actual": report.actual.tolist()}
    jpath = out / "dynamics_check.json"
    jpath.write_text(json.dumps(_json_safe(data), indent=2), encoding="utf-8")
    return {"png": fig.path, "json": jpath}


def _fig_cov_tails(run: Run, out: Path):
    keys = [k for k in COV_TAIL_KEYS + ("dynamics/cov_mean",) if run.has(k)]
    if not keys:
        return "covariance tails skipped: the run logs no dynamics/cov_* metric"
    fig = _new_figure(7.0, 4.0)
    ax = fig.subplots()
    for i, k in enumerate(keys):
        s, v = run.series(k)
        ax.plot(s, v, color=f"C{i}", label=k.replace("dynamics/", ""), ls="--" if k.endswith("cov_mean") else "-")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("RL step")
    ax.set_ylabel("mean token covariance (symlog)")
    ax.legend(fontsize=8)
    return _save(fig, out, "cov_tails.png", "Covariance tails over training",
                 "Mean of the top 0.02 % / 0.2 % / 2 % / 20 % of per-token centred covariances "
                 "(log π − mean)(A − mean) (2505.22617 Eq. 10, Table 1), and the mean over all tokens.")


def cov_positive(run: Run, key: str = "dynamics/cov_mean") -> Optional[dict[str, Any]]:
    """The covariance theorem's second claim (2505.22617 §3: the covariance term stays positive, so entropy keeps
    falling): over the steps that log ``key``, the fraction with a value > 0 and the mean. None when not logged."""
    _, v = run.series(key)
    if not v.size:
        return None
    return {"key": key, "n": int(v.size), "fraction_positive": float(np.mean(v > 0)), "mean": float(v.mean())}


def _sample_steps(run: Run) -> list[float]:
    return sorted({s["step"] for s in run.samples if isinstance(s.get("entropy"), list) and s["entropy"]
                   and isinstance(s.get("step"), (int, float))})


def _fig_entropy_hist(run: Run, out: Path, n_steps: int = 4):
    steps = _sample_steps(run)
    if not steps:
        return "entropy histograms skipped: samples.jsonl is missing or has no per-token entropies"
    pick = [steps[int(round(i))] for i in np.linspace(0, len(steps) - 1, min(n_steps, len(steps)))]
    pick = sorted(set(pick))
    vals = {s: np.asarray([e for smp in run.samples if smp.get("step") == s for e in smp["entropy"]
                           if isinstance(e, (int, float)) and math.isfinite(e)], dtype=np.float64) for s in pick}
    top = max((v.max() for v in vals.values() if v.size), default=1.0)
    bins = np.linspace(0.0, max(top, 1e-3), 40)
    fig = _new_figure(7.0, 4.0)
    ax = fig.subplots()
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for i, s in enumerate(pick):
        v = vals[s]
        if not v.size:
            continue
        ax.hist(v, bins=bins, histtype="step", lw=1.6, density=True,
                color=cmap(i / max(1, len(pick) - 1)), label=f"step {s:g} ({v.size} tokens, mean {v.mean():.2f})")
    ax.set_yscale("log")
    ax.set_xlabel("token entropy (nats)")
    ax.set_ylabel("density (log)")
    ax.legend(fontsize=8)
    return _save(fig, out, "entropy_hist.png", "Token-entropy distribution at a few steps",
                 "Per-token entropies of the saved samples (samples.jsonl). Most tokens are near-deterministic; "
                 "a small fraction of high-entropy 'forking' tokens carries most of the entropy.")


def _fig_health(run: Run, out: Path):
    panels = [(t, [k for k in keys if run.has(k)]) for t, keys in HEALTH_PANELS]
    panels = [(t, ks) for t, ks in panels if ks]
    if not panels:
        return "training-health panels skipped: none of length, clip, KL, grad-norm or eval metrics is logged"
    ncol = 3 if len(panels) > 4 else 2 if len(panels) > 1 else 1
    nrow = math.ceil(len(panels) / ncol)
    fig = _new_figure(3.4 * ncol, 2.6 * nrow)
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False).ravel())
    for ax, (title, keys) in zip(axes, panels):
        for i, k in enumerate(keys):
            s, v = run.series(k)
            ax.plot(s, v, color=f"C{i}", marker="o" if s.size < 30 else None, ms=3, label=k)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    return _save(fig, out, "health.png", "Other training metrics", "Whichever of response length, high-entropy "
                 "token fraction, clip fractions, KL to the reference, gradient norm and evaluation metrics the run "
                 "logged.")


# ---------------------------------------------------------------------------------------------------------------------
# Sample responses coloured by entropy


def _display_tokens(tokens: Sequence[str]) -> list[str]:
    """Make tokenizer pieces readable: byte-level BPE 'Ġ'/'Ċ' and SentencePiece '▁' become spaces/newlines."""
    joined = "".join(tokens)
    if "Ġ" in joined or "Ċ" in joined:
        return [t.replace("Ġ", " ").replace("Ċ", "\n").replace("ĉ", "\t") for t in tokens]
    if "▁" in joined:
        return [t.replace("▁", " ") for t in tokens]
    return [str(t) for t in tokens]


def _colour(x: float) -> str:
    """White → amber → red for x in [0, 1]."""
    x = min(max(x, 0.0), 1.0)
    stops = ((255, 255, 255), (255, 200, 80), (220, 40, 30))
    if x <= 0.5:
        a, b, t = stops[0], stops[1], x / 0.5
    else:
        a, b, t = stops[1], stops[2], (x - 0.5) / 0.5
    return "rgb({},{},{})".format(*(int(round(a[i] + (b[i] - a[i]) * t)) for i in range(3)))


def _pick_samples(run: Run) -> list[dict]:
    ok = [s for s in run.samples if isinstance(s.get("tokens"), list) and isinstance(s.get("entropy"), list)
          and s["tokens"] and len(s["tokens"]) == len(s["entropy"])]
    if not ok:
        return []
    first_step, last_step = min(s.get("step", 0) for s in ok), max(s.get("step", 0) for s in ok)
    chosen = []
    for st in dict.fromkeys((first_step, last_step)):
        at = [s for s in ok if s.get("step", 0) == st]
        correct = [s for s in at if s.get("correct")]
        chosen.append((correct or at)[0])
    return chosen


SAMPLE_PNG_MAX_TOKENS = 400  # tokens drawn per sample in sample_tokens.png (the HTML spans show all)


def _rgb01(x: float) -> tuple[float, float, float]:
    r, g, b = (int(c) for c in _colour(x)[4:-1].split(","))
    return r / 255.0, g / 255.0, b / 255.0


def _png_token_text(tok: str) -> str:
    """A token as drawn in the PNG: tabs as spaces, other control characters as '·' (newlines handled apart)."""
    return "".join(" " if ch == "\t" else ch if ch.isprintable() else "·" for ch in tok)


def _layout_tokens(tokens: Sequence[str], cols: int) -> tuple[list[tuple[int, int, str, int]], int]:
    """Place tokens on a character grid ``cols`` wide: [(line, col, text, token index)], number of lines.

    A token longer than the remaining room wraps (and is split if longer than a line); a newline inside a token is
    drawn as '↵' in that token's colour, and the text continues on the next line."""
    cells: list[tuple[int, int, str, int]] = []
    line = col = 0
    for i, tok in enumerate(tokens):
        parts = tok.split("\n")
        for j, part in enumerate(parts):
            text = _png_token_text(part) + ("↵" if j < len(parts) - 1 else "")
            while text:
                if col + len(text) > cols and col > 0:
                    line, col = line + 1, 0
                piece, text = text[:cols], text[cols:]
                cells.append((line, col, piece, i))
                col += len(piece)
            if j < len(parts) - 1:
                line, col = line + 1, 0
    return cells, line + 1


def sample_tokens_figure(samples: Sequence[dict], out: Path, scale: Optional[float] = None,
                         name: str = "sample_tokens.png", max_tokens: int = SAMPLE_PNG_MAX_TOKENS):
    """Draw sample responses as text with each token's background coloured by its entropy (white → amber → red at
    ``scale`` nats, as in the HTML), the high-entropy 'forking' tokens standing out; writes ``name`` into ``out``."""
    import warnings

    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import Rectangle
    from matplotlib.textpath import TextToPath

    ents = [[float(e) if isinstance(e, (int, float)) and math.isfinite(e) else 0.0 for e in s["entropy"]]
            for s in samples]
    flat = [e for es in ents for e in es]
    scale = scale or max(1e-6, float(np.percentile(flat, 99)) if flat else 1.0)
    fs, cols = 9.0, 110
    font = FontProperties(family="monospace", size=fs)
    char_w = TextToPath().get_text_width_height_descent("M" * 100, font, ismath=False)[0] / 100.0
    line_h = fs * 1.55
    blocks, n_rows = [], 0
    for smp, es in zip(samples, ents):
        toks = _display_tokens(smp["tokens"])[:max_tokens]
        cells, n_lines = _layout_tokens(toks, cols)
        head = (f"step {_fmt(smp.get('step'))} · reward {_fmt(smp.get('reward'))} · correct "
                f"{_fmt(smp.get('correct'))} · {len(es)} tokens, mean entropy {np.mean(es) if es else 0:.3f} nats, "
                f"max {max(es) if es else 0:.3f}")
        if len(smp["tokens"]) > max_tokens:
            head += f" · first {max_tokens} tokens shown"
        blocks.append((n_rows, head, cells, es))
        n_rows += 1 + n_lines + 1  # header, tokens, a blank line
    margin = 14.0  # points
    width_pt, height_pt = cols * char_w + 2 * margin, n_rows * line_h + 2 * margin + 30.0
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_pt / 72.0, height_pt / 72.0), dpi=110)
    ax = fig.add_axes((margin / width_pt, (margin + 30.0) / height_pt, cols * char_w / width_pt,
                       n_rows * line_h / height_pt))
    ax.set_xlim(0, cols)
    ax.set_ylim(n_rows, 0)
    ax.set_axis_off()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # glyphs missing from the font are drawn as boxes, not errors
        for row0, head, cells, es in blocks:
            ax.text(0, row0 + 0.5, head, fontsize=fs, fontweight="bold", va="center", ha="left", parse_math=False)
            for line, col, piece, i in cells:
                e = es[i] if i < len(es) else 0.0
                ax.add_patch(Rectangle((col, row0 + 1 + line + 0.05), len(piece), 0.9, facecolor=_rgb01(e / scale),
                                       edgecolor="none"))
                ax.text(col, row0 + 1 + line + 0.5, piece, fontproperties=font, va="center", ha="left",
                        parse_math=False)
    cmap = LinearSegmentedColormap.from_list("entropy", [_rgb01(0.0), _rgb01(0.5), _rgb01(1.0)])
    cax = fig.add_axes((margin / width_pt, 22.0 / height_pt, 0.3, 10.0 / height_pt))
    cb = fig.colorbar(ScalarMappable(Normalize(0.0, scale), cmap), cax=cax, orientation="horizontal")
    cb.ax.tick_params(labelsize=7)
    cax.text(1.02, 0.5, "token entropy (nats; red ≥ the top of the scale)", transform=cax.transAxes, va="center",
             ha="left", fontsize=8)
    return _save(fig, out, name, "Sample responses, tokens coloured by entropy",
                 "Each token's background is its entropy under the policy when it was sampled (white 0, red ≥ "
                 f"{scale:.2f} nats, the 99th percentile over the shown samples): the few red tokens are the "
                 "high-entropy 'forking' tokens where the response could branch. ↵ marks a newline token.")


def sample_html(sample: dict, scale: Optional[float] = None) -> str:
    """One response as HTML spans, each token's background coloured by its entropy (tooltip: the value)."""
    ent = [float(e) if isinstance(e, (int, float)) and math.isfinite(e) else 0.0 for e in sample["entropy"]]
    scale = scale or max(1e-6, float(np.percentile(ent, 99)) if ent else 1.0)
    spans = []
    for tok, e in zip(_display_tokens(sample["tokens"]), ent):
        spans.append(f'<span style="background:{_colour(e / scale)}" title="H = {e:.3f}">{html.escape(tok)}</span>')
    head = (f"step {_fmt(sample.get('step'))} · id {_fmt(sample.get('id'))} · reward {_fmt(sample.get('reward'))}"
            f" · correct {_fmt(sample.get('correct'))} · mean token entropy {np.mean(ent) if ent else 0:.3f}")
    prompt = html.escape(str(sample.get("prompt", "")))
    return (f'<div class="sample"><p class="meta">{head}</p><details><summary>prompt</summary><pre>{prompt}</pre>'
            f'</details><div class="tokens">{"".join(spans)}</div></div>')


# ---------------------------------------------------------------------------------------------------------------------
# Public API


@dataclass
class Report:
    """What :func:`analyze_run` / :func:`compare_runs` wrote."""

    html: Path
    out_dir: Path
    figures: dict[str, Path] = field(default_factory=dict)  # file name → path
    notes: list[str] = field(default_factory=list)  # figures skipped and why
    summary: dict[str, Any] = field(default_factory=dict)


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return _json_safe(v.item())
    return v


def analyze_run(run_dir: PathLike, out_dir: Optional[PathLike] = None, *, fit_fraction: float = PAPER_FIT_FRACTION,
                dynamics_report=None) -> Report:
    """Write the figures, ``report.html`` and ``summary.json`` of one run into ``out_dir`` (default RUN_DIR/analysis).

    ``dynamics_report``: an optional :class:`~entrolab.analysis.dynamics_check.DynamicsReport` to include.
    """
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"run": str(run.path), "method": run.method(), "n_steps": len(run.records),
                               "first_step": float(run.steps[0]), "last_step": float(run.steps[-1])}
    for k in ("entropy/mean", "reward/accuracy", "eval/accuracy", "eval/pass_at_k"):
        summary[f"final {k}"] = run.last(k)
    s_h, h = run.series("entropy/mean")
    summary["entropy_area"] = _trapezoid(s_h, h) if s_h.size else None
    summary["cov_positive"] = cov_positive(run)

    sections: list[tuple[str, Any]] = [
        ("Entropy and reward", _fig_entropy_reward(run, out)),
        ("Entropy–performance law", _fig_law(run, out, summary)),
        ("Forecast", _fig_forecast(run, out, summary, fit_fraction)),
        ("Entropy dynamics", _fig_dynamics(run, out, summary)),
    ]
    if dynamics_report is not None:
        sections.append(("Dynamics check on the model", _fig_dynamics_check(dynamics_report, out, summary)))
    sections += [
        ("Covariance tails", _fig_cov_tails(run, out)),
        ("Token-entropy histograms", _fig_entropy_hist(run, out)),
        ("Other training metrics", _fig_health(run, out)),
    ]
    figures = {f.name: f.path for _, f in sections if isinstance(f, _Fig)}
    notes = [f for _, f in sections if isinstance(f, str)]

    samples = _pick_samples(run)
    sample_scale = None
    if not samples:
        notes.append("sample responses skipped: samples.jsonl is missing or has no tokens with per-token entropies")
    else:
        all_e = [float(e) for s in samples for e in s["entropy"] if isinstance(e, (int, float)) and math.isfinite(e)]
        sample_scale = max(1e-6, float(np.percentile(all_e, 99))) if all_e else 1.0
        fig = sample_tokens_figure(samples, out, sample_scale)
        sections.append(("Sample responses, tokens coloured by entropy", fig))
        figures[fig.name] = fig.path

    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = [f"<h1>entrolab run report: {html.escape(run.name)}</h1>",
            f'<p class="meta">{html.escape(str(run.path))} · method {html.escape(run.method() or "–")} · '
            f"{len(run.records)} logged steps ({_fmt(summary['first_step'])}–{_fmt(summary['last_step'])}) · "
            f"generated {when}</p>", "<h2>Summary</h2>"]
    rows = [["final entropy/mean (nats)", summary["final entropy/mean"]],
            ["final reward/accuracy (train)", summary["final reward/accuracy"]],
            ["final eval/accuracy", summary["final eval/accuracy"]],
            ["final eval/pass_at_k", summary["final eval/pass_at_k"]],
            ["entropy area (trapezoid over steps)", summary["entropy_area"]]]
    if "law" in summary:
        law = summary["law"]
        rows += [[f"law a (R = {law['r_key']})", law["a"]], ["law b", law["b"]],
                 ["law ceiling −a+b", law["ceiling"]], ["law R²", law["r2"]]]
    if "forecast" in summary:
        rows += [["forecast RMSE", summary["forecast"]["rmse"]],
                 ["forecast final-step error", summary["forecast"]["final_error"]]]
    cp = summary["cov_positive"]
    if cp:
        rows += [[f"steps with {cp['key']} > 0 (of {cp['n']})", f"{cp['fraction_positive']:.1%}"],
                 [f"mean {cp['key']}", cp["mean"]]]
    else:
        rows += [["steps with dynamics/cov_mean > 0", "– (not logged)"]]
    body.append(_table(["quantity", "value"], rows))
    if notes:
        body.append("<h2>Notes</h2>" + "".join(f'<div class="note">{html.escape(n)}</div>' for n in notes))
    for title, f in sections:
        if isinstance(f, _Fig):
            body.append(f"<h2>{html.escape(title)}</h2>{_figure_html(f)}")
    if samples:
        body.append("<h2>Sample responses as text (hover a token for its entropy)</h2>"
                    f'<p class="meta">0 <span class="legend"></span> ≥ {sample_scale:.2f} nats</p>')
        body += [sample_html(s, sample_scale) for s in samples]
    if run.config:
        import yaml

        body.append("<h2>Configuration</h2><details><summary>config.yaml</summary><pre>"
                    + html.escape(yaml.safe_dump(run.config, sort_keys=False)) + "</pre></details>")
    summary["notes"] = notes
    summary["figures"] = sorted(figures)
    html_path = out / "report.html"
    html_path.write_text(_page(f"entrolab report — {run.name}", body), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2), encoding="utf-8")
    return Report(html=html_path, out_dir=out, figures=figures, notes=notes, summary=summary)


def _unique_labels(runs: Sequence[Run], labels: Optional[Sequence[str]]) -> list[str]:
    if labels is not None:
        if len(labels) != len(runs):
            raise ValueError(f"got {len(labels)} labels for {len(runs)} runs")
        return [str(x) for x in labels]
    out, seen = [], {}
    for r in runs:
        base = r.name or str(r.path)
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base} ({seen[base]})")
    return out


def compare_runs(run_dirs: Sequence[PathLike], out_dir: PathLike, labels: Optional[Sequence[str]] = None) -> Report:
    """Overlay entropy and reward curves of several runs and tabulate their outcomes; writes ``compare.html``.

    Table: final accuracy (eval/accuracy where logged, else the training reward/accuracy, marked "train"),
    pass@k, final entropy, entropy area (trapezoid of entropy/mean over steps; compare runs of equal length), and
    the law's a, b and ceiling.
    """
    if not run_dirs:
        raise RunDirError("compare needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    names = _unique_labels(runs, labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    figs: list[_Fig] = []

    if any(r.has("entropy/mean") for r in runs):
        fig = _new_figure(7.0, 4.0)
        ax = fig.subplots()
        for i, (r, n) in enumerate(zip(runs, names)):
            s, v = r.series("entropy/mean")
            if s.size:
                ax.plot(s, v, color=f"C{i % 10}", label=n)
        ax.set_xlabel("RL step")
        ax.set_ylabel("entropy/mean (nats)")
        ax.legend(fontsize=8)
        figs.append(_save(fig, out, "compare_entropy.png", "Policy entropy", "Token-mean entropy of each run's "
                          "sampled training batches."))
    else:
        notes.append("entropy overlay skipped: no run logs entropy/mean")

    reward_panels = [k for k in ("reward/accuracy", "eval/accuracy") if any(r.has(k) for r in runs)]
    if reward_panels:
        fig = _new_figure(7.0, 2.8 * len(reward_panels))
        axes = np.atleast_1d(fig.subplots(len(reward_panels), 1, sharex=True, squeeze=False).ravel())
        for ax, k in zip(axes, reward_panels):
            for i, (r, n) in enumerate(zip(runs, names)):
                s, v = r.series(k)
                if s.size:
                    ax.plot(s, v, color=f"C{i % 10}", label=n, marker="o" if k.startswith("eval/") else None, ms=3)
            ax.set_ylabel(k)
            ax.legend(fontsize=8)
        axes[-1].set_xlabel("RL step")
        figs.append(_save(fig, out, "compare_reward.png", "Reward and accuracy",
                          "Training-batch accuracy and, where logged, greedy evaluation accuracy."))
    else:
        notes.append("reward overlay skipped: no run logs reward/accuracy or eval/accuracy")

    rows, table = [], []
    law_drawn = []
    for i, (r, n) in enumerate(zip(runs, names)):
        acc, acc_src = r.last("eval/accuracy"), "eval"
        if acc is None:
            acc, acc_src = r.last("reward/accuracy"), "train"
        s_h, h = r.series("entropy/mean")
        law = None
        try:
            key, st, H, R, _ = law_points(r)
            law = fit_law(H, R)
            law_drawn.append((i, n, H, R, law))
        except ValueError as e:
            notes.append(f"{n}: law not fitted: {e}")
        row = {"run": n, "method": r.method(), "steps": len(r.records), "final_accuracy": acc,
               "accuracy_source": acc_src if acc is not None else None, "pass_at_k": r.last("eval/pass_at_k"),
               "final_entropy": float(h[-1]) if h.size else None,
               "entropy_area": _trapezoid(s_h, h) if s_h.size else None,
               "law_a": law.a if law else None, "law_b": law.b if law else None,
               "law_ceiling": law.ceiling if law else None, "law_r2": law.r2 if law else None}
        cp = cov_positive(r)
        row["cov_positive_frac"] = cp["fraction_positive"] if cp else None
        row["cov_mean"] = cp["mean"] if cp else None
        table.append(row)
        rows.append([n, row["method"] or "–", row["steps"],
                     f"{_fmt(acc)} ({acc_src})" if acc is not None else "–", row["pass_at_k"],
                     row["final_entropy"], row["entropy_area"], row["law_a"], row["law_b"], row["law_ceiling"],
                     "–" if cp is None else f"{cp['fraction_positive']:.1%}", row["cov_mean"]])

    if law_drawn:
        fig = _new_figure(6.5, 4.4)
        ax = fig.subplots()
        for i, n, H, R, law in law_drawn:
            ax.plot(H, R, "o", ms=3, alpha=0.6, color=f"C{i % 10}")
            hh = np.linspace(0.0, float(H.max()) * 1.05, 100)
            ax.plot(hh, law.predict(hh), color=f"C{i % 10}", label=f"{n}: ceiling {law.ceiling:.3f}")
        ax.set_xlabel("policy entropy H (nats)")
        ax.set_ylabel("R (eval/accuracy, else reward/accuracy)")
        ax.legend(fontsize=8)
        figs.append(_save(fig, out, "compare_law.png", "Entropy–performance law per run",
                          "Each run's (H, R) points and its fitted R = −a·exp(H) + b, drawn down to H = 0 (the "
                          "ceiling)."))

    body = [f"<h1>entrolab comparison of {len(runs)} runs</h1>",
            f'<p class="meta">{" · ".join(html.escape(str(r.path)) for r in runs)}</p>', "<h2>Outcomes</h2>",
            _table(["run", "method", "steps", "final accuracy", "pass@k", "final entropy", "entropy area",
                    "law a", "law b", "ceiling −a+b", "steps with cov > 0", "mean cov"], rows),
            '<p class="meta">Final accuracy is the last eval/accuracy where the run logs it ("eval"), else the last '
            'training-batch reward/accuracy ("train"). Entropy area is the trapezoid of entropy/mean over steps. '
            '"Steps with cov &gt; 0" is the fraction of logged steps whose dynamics/cov_mean is positive, and '
            '"mean cov" its mean: the covariance theorem (2505.22617 §3) says it stays positive.</p>']
    if notes:
        body.append("<h2>Notes</h2>" + "".join(f'<div class="note">{html.escape(x)}</div>' for x in notes))
    for f in figs:
        body.append(f"<h2>{html.escape(f.title)}</h2>{_figure_html(f)}")
    html_path = out / "compare.html"
    html_path.write_text(_page(f"entrolab comparison ({len(runs)} runs)", body), encoding="utf-8")
    summary = {"runs": table, "notes": notes, "figures": [f.name for f in figs]}
    (out / "compare.json").write_text(json.dumps(_json_safe(summary), indent=2), encoding="utf-8")
    return Report(html=html_path, out_dir=out, figures={f.name: f.path for f in figs}, notes=notes, summary=summary)
