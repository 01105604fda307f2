"""EAT: Entropy After ``</think>`` — early exit from reasoning (Wang, McInerney, Wang, Kallus, arXiv 2509.26522;
authors' code xidulu/EAT).

At every reasoning-step boundary n (a generated ``\\n\\n``), append an end-of-thinking marker to the prefix *without
committing it* and read the next-token entropy there:

    EAT_n = H(π(· | q, r_1 … r_n, "\\n</think>\\n"))            (bits by default, as in the paper)

Track its exponential moving mean and variance (timescale α; m_0 = EAT_0, v_0 = 0):

    m_n = α·EAT_n + (1 − α)·m_{n−1}
    v_n = α·(EAT_n − m_n)² + (1 − α)·v_{n−1}

and stop reasoning at the first boundary n ≥ ``min_distance`` with v_n < δ (optionally also EAT_n < ``min_value``).
Then force the marker (``answer_suffix``) and let the model answer in at most ``answer_tokens`` tokens. A sequence that
reaches ``max_new_tokens − answer_tokens`` without exiting is forced to answer then (reason "budget").

Defaults: α = 0.1 and ``min_distance`` = 25 boundaries are the authors' code defaults (their README suggests
min_distance ≈ 4/α for the EMA to warm up). δ is tuned per model in the paper; δ = 1.0 is the top of the range the
authors' notebooks use for particular models (0.82–1.0), **not** a paper default — calibrate it for your model.
``probe_samples = 0`` uses the exact one-token EAT (the paper's signal); ``probe_samples = S, probe_tokens = K`` uses
the authors' Monte Carlo K-token variant (mean over S sampled continuations of Σ_{k<K} H_k). Probes cost
``len(marker)`` tokens each (counted in ``tokens_spent``).

Departure: the paper computes EAT post hoc on finished chains; here it runs online inside the decoding loop, which
is the deployment the paper proposes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError
from ..generation.decoder import StepView, nats_to
from ..registry import check_range
from .base import (
    STRATEGIES,
    GenerationSettings,
    Strategy,
    StrategyResult,
    uncertainty_info,
)

__all__ = ["EAT", "ema_variance_stop"]


def ema_variance_stop(values: list[float], alpha: float, delta: float, min_distance: int,
                      min_value: Optional[float] = None) -> tuple[Optional[int], list[float]]:
    """Post-hoc EAT rule on a list of EAT values: (first n ≥ min_distance with v_n < δ [and EAT_n < min_value], or None;
    the EMA variances v_0..v_{N−1})."""
    m = v = 0.0
    out: list[float] = []
    stop = None
    for n, x in enumerate(values):
        if n == 0:
            m, v = x, 0.0
        else:
            m = alpha * x + (1 - alpha) * m
            v = alpha * (x - m) ** 2 + (1 - alpha) * v
        out.append(v)
        if stop is None and n >= max(min_distance, 1) and v < delta and (min_value is None or x < min_value):
            stop = n
    return stop, out


@STRATEGIES.register("eat")
@dataclass
class EAT(GenerationSettings, Strategy):
    """Entropy After </think> early exit (arXiv 2509.26522); see the module docstring for the rule."""

    arxiv = "2509.26522"
    sweep_field = "delta"  # the early-exit trade-off: a larger δ exits sooner

    alpha: float = 0.1
    """EMA timescale α (authors' code)."""
    delta: float = 1.0
    """Stop when the EMA variance of EAT falls below δ (tuned per model; 1.0 is a notebook value, not a default)."""
    min_distance: int = 25
    """Boundaries to pass before exiting is allowed (authors' code default; README suggests ≈ 4/α)."""
    min_value: Optional[float] = None
    """Optional floor: also require EAT_n < min_value to exit."""
    entropy_base: float = 2.0
    """Log base of EAT (2: bits, as in the paper; e ≈ 2.718: nats)."""
    probe_suffix: str = "\n</think>\n"
    """Text appended (uncommitted) at each boundary before reading the entropy: ``\\n</think>\\n`` as in the
    method card (kl-objective-inference.md §3.4); the card's optional variant is ``"\\n</think>\\nFinal answer: "``."""
    probe_temperature: float = 1.0
    """Temperature of the probed distribution (the authors read softmax(z), T = 1)."""
    probe_samples: int = 0
    """0: exact next-token EAT. S > 0 with probe_tokens = K > 1: Monte Carlo K-token entropy over S samples."""
    probe_tokens: int = 1
    """K, tokens per Monte Carlo probe continuation."""
    boundary: str = "\n\n"
    """Reasoning-step boundary."""
    answer_suffix: str = "</think>\n\n"
    """Forced when reasoning stops, before the answer."""
    answer_tokens: int = 64
    """Tokens allowed for the answer after the forced suffix."""
    max_new_tokens: int = 512
    """Total tokens per response (reasoning + suffix + answer)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        o = type(self).__name__

        check_range(o, "alpha", self.alpha, lo=0.0, hi=1.0, lo_open=True)
        check_range(o, "delta", self.delta, lo=0.0)
        check_range(o, "min_distance", self.min_distance, lo=0)
        check_range(o, "entropy_base", self.entropy_base, lo=1.0, lo_open=True)
        check_range(o, "probe_samples", self.probe_samples, lo=0)
        check_range(o, "probe_tokens", self.probe_tokens, lo=1)
        check_range(o, "answer_tokens", self.answer_tokens, lo=1)
        if not self.boundary or not self.probe_suffix:
            raise ConfigError("EAT.boundary and EAT.probe_suffix must be non-empty")

    def run(self, model, tokenizer, questions, *, generator=None, prompt_fn=None, answer_fn=None):
        prompt_fn, answer_fn = self._fns(prompt_fn, answer_fn)
        probe_ids = list(tokenizer.encode(self.probe_suffix, add_special_tokens=False))
        answer_ids = list(tokenizer.encode(self.answer_suffix, add_special_tokens=False))
        think_budget = self.max_new_tokens - self.answer_tokens - len(answer_ids)
        if think_budget < 1:
            raise ConfigError(f"EAT.max_new_tokens = {self.max_new_tokens} leaves no room to reason before "
                              f"answer_tokens = {self.answer_tokens} and the {len(answer_ids)}-token answer suffix")
        dec = self.decoder(model, tokenizer, generator)
        group_probe: dict[int, int] = {}
        base = None if abs(self.entropy_base - math.e) < 1e-9 else self.entropy_base

        def hook(view: StepView) -> None:
            for row, tr in enumerate(view.traces):
                st = tr.extra.setdefault("eat", {"values": [], "variances": [], "m": 0.0, "v": 0.0,
                                                 "exit": None, "reason": None, "answer_start": None})
                if st["answer_start"] is not None:  # answering: cap the answer length
                    if tr.num_tokens - st["answer_start"] >= self.answer_tokens:
                        view.stop(row, "hook")
                    continue
                if tr.num_tokens >= think_budget:
                    self._exit(view, row, st, answer_ids, "budget")
                    continue
                if not tr.token_ids or not self._at_boundary(view, row):
                    continue
                before = dec.stats.probe_tokens
                h = dec.probe(row, probe_ids, temperature=self.probe_temperature, samples=self.probe_samples,
                              tokens=self.probe_tokens)
                group_probe[tr.group] = group_probe.get(tr.group, 0) + dec.stats.probe_tokens - before
                x = nats_to(h, base)
                n = len(st["values"])
                if n == 0:
                    st["m"], st["v"] = x, 0.0
                else:
                    st["m"] = self.alpha * x + (1 - self.alpha) * st["m"]
                    st["v"] = self.alpha * (x - st["m"]) ** 2 + (1 - self.alpha) * st["v"]
                st["values"].append(x)
                st["variances"].append(st["v"])
                st.setdefault("positions", []).append(tr.num_tokens)  # probed after this many generated tokens
                if (n >= max(self.min_distance, 1) and st["v"] < self.delta
                        and (self.min_value is None or x < self.min_value)):
                    st["exit"] = n
                    self._exit(view, row, st, answer_ids, "eat")

        dec.prefill(self._encode(tokenizer, prompt_fn, questions))
        traces = {t.group: t for t in dec.run(hook)}
        out = []
        for g, q in enumerate(questions):
            t = traces[g]
            st = t.extra.get("eat", {})
            reason = st.get("reason") or t.finish_reason
            spent = t.num_tokens + group_probe.get(g, 0)
            info = {"exit_reason": reason, "exit_boundary": st.get("exit"), "boundaries": len(st.get("values", [])),
                    "boundary_positions": list(st.get("positions", [])), "answer_start": st.get("answer_start"),
                    "reasoning_tokens": st.get("answer_start") if st.get("answer_start") is not None else t.num_tokens,
                    "probe_tokens": group_probe.get(g, 0), "eat_values": list(st.get("values", [])),
                    "eat_variances": list(st.get("variances", [])), "finish_reason": t.finish_reason,
                    **uncertainty_info(t)}
            out.append(StrategyResult(q, answer_fn(t.text), t.text, spent, [t], t, info))
        return out

    def _at_boundary(self, view: StepView, row: int) -> bool:
        """True when the last generated token completes a boundary (it was not complete one token earlier)."""
        ids = view.traces[row].token_ids
        tail = view.decoder.decode(ids[-2:])
        if self.boundary not in tail:
            return False
        prev = view.decoder.decode(ids[-2:-1]) if len(ids) >= 2 else ""
        return self.boundary not in prev

    @staticmethod
    def _exit(view: StepView, row: int, st: dict, answer_ids: list[int], reason: str) -> None:
        st["reason"] = reason
        st["answer_start"] = view.traces[row].num_tokens + len(answer_ids)
        view.force(row, answer_ids)
