"""Catalog entries of the agentic sampling methods (issue 9, "Method catalog IV"): entropy-guided branching after tool
calls. Components live in ``knobs/sampling/agentic.py``; the tool environment in ``env/tools.py`` (sandbox:
``env/sandbox.py``); the branching engine in ``generation/branching.py``. ``docs/methods-agentic.md`` has the formulas,
defaults and departures.

Both methods run on any task (they bring the calculator tool), and are meant for ``data.task=tool_arithmetic``,
whose prompt teaches the ``<tool>...</tool>`` format. Their branching budget is ``rollout.n`` minus the rows they
start with: with the papers' n = 16 and 8 initial rows; with a small ``rollout.n`` lower ``initial_rollouts``.

Toy overrides: none — the toy policy has no rollouts (its sampling hook is never called), so only the advantage and
clip rules act there, at their paper values.
"""

from ..registry import Method, register_method

register_method(Method(
    name="arpo", title="ARPO: entropy-based adaptive branching after tool calls", arxiv="2507.19849",
    sets={"sampling": "arpo", "advantage": "arpo_attribution"},
    entropy_effect="spends the rollout budget on branches right after tool observations that raised entropy; "
                   "no entropy term in the loss",
    evidence="approximate — branching rule and defaults (n 16, 8 initial, beam 2, τ 0.5, w 0.2) read in the "
             "released rollout code; segment entropy over the full vocabulary instead of vLLM's top-10 log-probs; "
             "fresh samples fill the budget per decoding pass, not per synchronous round; calculator tool",
    notes="branch iff clip(U − w·ΔH, 0, 1) ≤ τ after each observation, ΔH = H(segment) − H(first segment), "
          "H = Σ of the first 20 token entropies / log|V|; soft advantage attribution (GRPO over all branches; "
          "advantage.mode=hard averages shared tokens explicitly).",
))
register_method(Method(
    name="aepo_dong", title="AEPO (Dong et al.): agentic entropy-balanced policy optimisation", arxiv="2510.14545",
    sets={"sampling": "aepo_dong", "advantage": "aepo_entropy_aware",
          # entropy-balanced clipping: PPO's clip with a kept (1+ε_h)-weighted gradient on high-ratio positive
          # tokens and none on low-ratio negative ones = CE-GPPO's rule with β_low = 0, β_high = 1
          "clip": {"name": "ce_gppo", "beta_low": 0.0, "beta_high": 1.0, "dual_clip": 3.0}},
    entropy_effect="balances entropy: budget split by pre-monitored root vs tool-step entropy, penalised "
                   "consecutive branching, and high-ratio positive tokens keep a bounded gradient",
    evidence="approximate — β 0.5, γ 0.05, a 0.2, ε 0.2/0.2, c 3 read in the released AEPO code, which ships with "
             "pre-monitoring off (on here, as the paper describes); consecutive branches counted per path (code: per "
             "prompt and round); entropy-aware advantage standardised over the rollout batch with the rollout "
             "policy's entropy (code: per micro-batch, current policy); H_root from the pre-rollout's first segment",
    notes="m = clip(⌊n·σ(β(H_root − H̄_tool))⌋ + 1, 1, n) initial rows; branch iff clip((U + w·ΔH)(1 − γ·l)) ≥ τ; "
          "Ã = A·(1 + a·Ĥ); ℓ = max(−A·r, −A·clip(r, 1−ε_l, (1+ε_h)·r/sg(r))), dual clip 3 (as ce_gppo with "
          "β_low 0, β_high 1: the same gradients; the loss value of low-clipped negative tokens reads 0).",
))
