"""Multi-turn tool rollouts: the decoder hook that runs the calculator (``env/tools.py``) on each tool call and forces
its observation into the sequence.

**Tool-call format.** The model writes ``<tool>PROGRAM</tool>``; ``PROGRAM`` is restricted Python (an arithmetic
expression, or a few lines with assignments, loops and the functions listed in :mod:`entrolab.env.sandbox`). As soon
as a response ends with ``</tool>`` the program runs in the sandbox and the observation

    <result>VALUE</result>          (or <result>error: ...</result>, refused: ..., limit: ..., timeout: ...)

is appended to the response as *forced* tokens: the model attends to them in every later forward pass, but they are
masked out of the loss (``Generation.trainable`` 0), since the policy did not choose them. Generation then resumes,
up to ``max_calls`` tool calls per response; a call beyond that ends the response (finish reason
``"tool_limit"``; ARPO's rollout appends EOS there). Errors, refusals and timeouts come back to the model as
observations; nothing a model writes can stop a run.

**Turns.** ``turn_id`` (per token) counts the observations before the token: the model's first segment is turn 0,
the segment after the first observation turn 1, and so on (an observation's own tokens carry the turn they close).
EPO (2509.22576) reads it as ``batch.extras["turn_id"]`` for its per-turn entropy history.

**Decoding.** :class:`ToolHook` is a hook of :class:`entrolab.generation.decoder.Decoder` (KV-cached decoding with
per-token entropy): it watches each live sequence, batches the tool calls that complete at one step into a single
sandbox run, and forces the observations; forks of a sequence inherit its tool state. A caller may pass
``on_observation(view, rows)``, run at the first decoding step after an observation has been fully appended — the
moment at which ARPO and AEPO decide whether to branch (``entrolab.knobs.sampling.agentic``).

**In the trainer.** Rollouts run on the branching engine (``generation/branching.py``: ``engine.branching().sample``
with a :class:`ToolHook`) and are packed by :func:`pack_tool_traces` into a ``generation.rows.Generation``: attention
over every response token, ``trainable`` 0 on observations, the tree extras, plus ``turn_id`` and
``tool_observation`` extras and ``tools/*`` metrics. On a task with a ``tools`` attribute (``tool_arithmetic``,
:class:`ToolArithmeticTask`) the trainer sets ``engine.tools`` and, when the method's sampling strategy does not take
over generation, samples ``rollout.n`` tool-using responses per prompt with :func:`tool_generate`; evaluation uses
the tool too. ARPO and AEPO-Dong take over generation and branch (they use ``engine.tools``, or a default
:class:`ToolEnvironment` on a task without one).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch

from ..env.tools import TOOL_CLOSE, ToolEnvironment
from .decoder import StepView, Trace

__all__ = ["ToolHook", "engine_tools", "pack_tool_traces", "segment_entropy", "tool_generate", "tool_state",
           "trainable_mask", "turn_ids"]


def tool_state(trace: Trace) -> dict[str, Any]:
    """The tool bookkeeping of a trace (created on first use; copied into forks with ``trace.extra``):
    ``calls`` (int), ``obs`` ([start, end) token spans of observations), ``seg_starts`` (first token of each model
    segment), ``observed`` (end of the last observation already announced to ``on_observation``)."""
    return trace.extra.setdefault("tool", {"calls": 0, "obs": [], "seg_starts": [0], "observed": -1,
                                           "results": []})


class ToolHook:
    """Decoder hook that runs the tool environment (module docstring). ``then(view)`` runs after it each step."""

    def __init__(self, env: ToolEnvironment, tokenizer: Any,
                 on_observation: Optional[Callable[[StepView, list[int]], None]] = None,
                 then: Optional[Callable[[StepView], None]] = None):
        if tokenizer is None:
            raise ValueError("the tool environment needs a tokenizer to read calls and write observations")
        self.env = env
        self.tokenizer = tokenizer
        self.on_observation = on_observation
        self.then = then
        self.window = max(16, len(TOOL_CLOSE) + 8)

    def _closes_call(self, tr: Trace) -> bool:
        """Whether the last token (chosen by the model) completed a ``</tool>``."""
        if not tr.token_ids or tr.forced[-1]:
            return False
        ids = tr.token_ids[-self.window:]
        now = self.tokenizer.decode(ids)
        if TOOL_CLOSE not in now:
            return False
        return now.count(TOOL_CLOSE) > self.tokenizer.decode(ids[:-1]).count(TOOL_CLOSE)

    def __call__(self, view: StepView) -> None:
        observed, calls = [], []
        for r, tr in enumerate(view.traces):
            if tr._pending:
                continue
            st = tool_state(tr)
            n = len(tr.token_ids)
            if st["obs"] and min(st["obs"][-1][1], n) == n and st["observed"] != n:
                st["observed"] = n
                observed.append(r)
            elif self._closes_call(tr):
                if st["calls"] >= self.env.max_calls:
                    view.stop(r, "tool_limit")
                else:
                    start = st["seg_starts"][-1]
                    calls.append((r, self.env.extract_call(view.decoder.decode(tr.token_ids[start:]))))
        if observed and self.on_observation is not None:
            self.on_observation(view, observed)
        if calls:
            results = self.env.execute([p for _, p in calls])
            for (r, _), res in zip(calls, results):
                tr = view.traces[r]
                st = tool_state(tr)
                ids = self.tokenizer.encode(self.env.observation(res), add_special_tokens=False)
                start = len(tr.token_ids)
                st["calls"] += 1
                st["obs"].append([start, start + len(ids)])
                st["seg_starts"].append(start + len(ids))
                st["results"].append(res.kind)
                view.force(r, ids)
        if self.then is not None:
            self.then(view)


def segment_entropy(trace: Trace, start: int, end: Optional[int] = None, tokens: int = 20,
                    vocab_size: Optional[int] = None) -> float:
    """ARPO's segment entropy (2507.19849 code): the entropies of the first ``min(tokens, len)`` tokens of the
    segment ``[start, end)`` summed, divided by log |V| when ``vocab_size`` is given; 0 for an empty segment.

    The released code sums −p log p over the top-10 log-probs vLLM returns per token; here each token's term is the
    full-vocabulary entropy the decoder measured (the top-10 sum is its truncation)."""
    end = len(trace.entropies) if end is None else min(end, len(trace.entropies))
    vals = [h for h, f in zip(trace.entropies[start:end], trace.forced[start:end]) if not f][:tokens]
    total = float(sum(vals))
    return total / math.log(vocab_size) if vocab_size and vocab_size > 1 else total


# ----------------------------------------------------------------------------------------------------- packing
def trainable_mask(trace: Trace) -> list[float]:
    """Loss mask of a trace's tokens: 1 on tokens the model chose, 0 on observation tokens."""
    out = [1.0] * trace.num_tokens
    for s, e in tool_state(trace)["obs"]:
        for j in range(s, min(e, trace.num_tokens)):
            out[j] = 0.0
    return out


def turn_ids(trace: Trace) -> list[int]:
    """Turn of each token: the number of observations that end before it (an observation carries the turn it
    closes)."""
    out = [0] * trace.num_tokens
    for k, (s, e) in enumerate(tool_state(trace)["obs"]):
        for j in range(min(s, trace.num_tokens), trace.num_tokens):
            out[j] = k + 1 if j >= e else k
    return out


def engine_tools(engine: Any) -> ToolEnvironment:
    """The tool environment of a rollout engine: the task's (the trainer sets ``engine.tools`` when the task has
    one), else a default :class:`ToolEnvironment`."""
    env = getattr(engine, "tools", None)
    return env if env is not None else ToolEnvironment()


def pack_tool_traces(tree: Any, traces: Sequence[Trace], prompt_index: Sequence[int],
                     group_ids: Optional[Sequence[int]] = None) -> Any:
    """A trainer ``Generation`` of tool-using traces (``BranchingRollout.pack`` with the tree extras): the loss mask
    excludes observation tokens (attended: they stay in ``attention_mask``), and the extras add ``turn_id`` (B, T)
    long and ``tool_observation`` (B, T) bool; ``metrics`` count calls and outcomes."""
    gen = tree.pack(traces, prompt_index, group_ids=group_ids, trainable=[trainable_mask(t) for t in traces])
    T = gen.response_ids.shape[1]
    turn = torch.zeros((len(traces), T), dtype=torch.long)
    obs = torch.zeros((len(traces), T), dtype=torch.bool)
    for i, t in enumerate(traces):
        if t.num_tokens:
            turn[i, :t.num_tokens] = torch.tensor(turn_ids(t), dtype=torch.long)
            obs[i, :t.num_tokens] = torch.tensor([m == 0.0 for m in trainable_mask(t)])
    gen.extras["turn_id"] = turn
    gen.extras["tool_observation"] = obs
    calls = [tool_state(t)["calls"] for t in traces]
    kinds: dict[str, int] = {}
    for t in traces:
        for k in tool_state(t)["results"]:
            kinds[k] = kinds.get(k, 0) + 1
    gen.metrics.update({"tools/calls_per_response": sum(calls) / max(len(traces), 1),
                        "tools/responses_with_call_frac": sum(c > 0 for c in calls) / max(len(traces), 1),
                        "tools/limit_stops_frac": sum(t.finish_reason == "tool_limit" for t in traces)
                        / max(len(traces), 1)})
    for k, v in sorted(kinds.items()):
        gen.metrics[f"tools/{k}_frac"] = v / max(sum(calls), 1)
    gen.metrics["sampling/generated_tokens"] = float(tree.tokens_spent())
    return gen


def tool_generate(engine: Any, prompts: Sequence[str], n: int, env: Optional[ToolEnvironment] = None,
                  **decoder_kwargs: Any) -> Any:
    """Plain multi-turn sampling with the tool: ``n`` responses per prompt (rows prompt-major), no branching — what
    the trainer runs on a tool task for methods whose sampling strategy does not take over generation (GRPO, EPO,
    RAGEN, ...) and for evaluation (``greedy=True`` goes to the decoder)."""
    env = env if env is not None else engine_tools(engine)
    tree = engine.branching(**decoder_kwargs)
    traces = tree.sample(engine.encode(prompts), n, groups=list(range(len(prompts))),
                         hook=ToolHook(env, engine.tokenizer))
    traces = sorted(traces, key=lambda t: (t.group, t.id))
    return pack_tool_traces(tree, traces, [t.group for t in traces])


