"""Branching rollouts: one engine that samples, measures per-token entropy, forks from chosen prefixes (reusing the
prefix's KV cache) and keeps the tree, for every sampling method that branches (TreeRL, FR3E, ETTRL, ADR, CURE,
MENTOR, EDGE-GRPO's correction; ARPO / AEPO-Dong with tool turns) and for inference strategies that branch. Sampling
strategies get one from ``RolloutEngine.branching()`` (``generation/engine.py``).

**The branching engine** :class:`BranchingRollout`, on top of ``generation.decoder.Decoder`` (the KV-cached
decoder that records H_t, V_t and log π per token and lets a step hook ``stop``/``fork``/``force`` sequences)::

    tree = engine.branching()                      # or BranchingRollout(model, tokenizer, ...)
    roots = tree.sample(prompt_ids, n, groups=[...], hook=None)   # list[Trace], finished
    kids = tree.fork([(trace, position, copies), ...], hook=None)  # continue trace after tokens[:position]
    gen = tree.pack(traces, prompt_index=[...], group_ids=[...], trainable=None)

Every ``Trace`` (``generation.decoder.Trace``) is one complete root-to-leaf response: ``token_ids``, ``entropies``
(of softmax(z/T) at the sampling temperature), ``logprobs``, ``parent`` (the trace it was forked from) and
``fork_step`` (the token position where it diverged; it shares ``token_ids[:fork_step]`` with its parent). Forks are
either *online*, from a hook during decoding (``view.fork(row, tokens)``; children take different tokens at that
step), or *later*, from any prefix of a finished trace with :meth:`BranchingRollout.fork`: the finished trace's KV
cache row was kept (``Decoder(keep_cache=True)``), is cropped to the prefix and re-used, and one token per fork is run
to get the forked position's distribution (``Decoder.resume``). Trace ids are unique within one engine.

**The tree.** :func:`tree_nodes` rebuilds the segment tree from (parent, fork_step) alone: each trace's own tokens
(from its ``fork_step`` on) are cut at the positions where children fork off it; each piece is a node, whose parent
is the node holding the token just before it (the prompt — node 0 — for a node starting at position 0). ``pack``
writes it into the extras

- ``tree_node`` (B, T) long: the node id (≥ 1, unique per run) of the segment each response token belongs to, 0 on
  padding — the path of a row is its sequence of distinct node ids; a node's subtree leaves are the rows whose path
  contains it (``knobs/advantage/rollouts.py`` computes per-node and per-leaf-group advantages from this alone);
- ``tree_root`` (B,) long: the run-unique id of the row's root trace; ``fork_pos`` (B,) long: the row's
  ``fork_step`` (0 for roots); ``tree_depth`` (B,) long: number of forks from its root.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch

from .decoder import Decoder, Hook, Start, Trace, encode_prompts
from .rows import Generation

ForkSpec = Union[Start, tuple]


class IdCounter:
    """Run-unique increasing integer ids (trace ids, node ids), shared by every engine of a run."""

    def __init__(self, start: int = 1):
        self.next = int(start)

    def take(self, k: int = 1) -> list[int]:
        out = list(range(self.next, self.next + k))
        self.next += k
        return out

    def __iter__(self):
        while True:
            yield self.take(1)[0]

    def advance_past(self, used: int) -> None:
        self.next = max(self.next, int(used) + 1)


class BranchingRollout:
    """A forest of sequences grown from prompts by one model: sample, fork online (hooks) or later (KV reuse), pack.

    ``decoder_kwargs`` go to every ``Decoder`` (``temperature``, ``top_p``, ``max_new_tokens``, ``stop_strings``,
    ``generator``, ...). ``ids``: the run's :class:`IdCounter` (trace and node ids stay unique across engines).
    """

    def __init__(self, model: Any, tokenizer: Any, *, ids: Optional[IdCounter] = None, **decoder_kwargs: Any):
        self.model = model
        self.tokenizer = tokenizer
        self.decoder_kwargs = decoder_kwargs
        self.ids = ids if ids is not None else IdCounter()
        self.traces: dict[int, Trace] = {}
        self.snapshots: dict[int, Any] = {}
        self.decoders: list[Decoder] = []

    def _decoder(self, **overrides: Any) -> Decoder:
        kw = {**self.decoder_kwargs, **overrides}
        model = kw.pop("model", self.model)
        dec = Decoder(model, self.tokenizer, id_start=self.ids.next, keep_cache=True, **kw)
        self.decoders.append(dec)
        return dec

    def _collect(self, dec: Decoder, traces: list[Trace]) -> list[Trace]:
        self.ids.advance_past(dec._next_id - 1)
        self.snapshots.update(dec.snapshots)
        dec.snapshots = {}
        for t in traces:
            self.traces[t.id] = t
        return sorted(traces, key=lambda t: t.id)

    def sample(self, prompts: Sequence[Union[str, Sequence[int]]], n: int = 1, *, groups: Optional[Sequence[int]] = None,
               hook: Optional[Hook] = None, **overrides: Any) -> list[Trace]:
        """``n`` sequences per prompt (plus any the hook forks off), decoded to the end; sorted by id."""
        ids = encode_prompts(self.tokenizer, prompts)
        dec = self._decoder(**overrides)
        dec.prefill(ids, num_return_sequences=n, groups=groups)
        return self._collect(dec, dec.run(hook))

    def fork(self, forks: Sequence[ForkSpec], *, hook: Optional[Hook] = None, **overrides: Any) -> list[Trace]:
        """Continue traces from prefixes: each fork is ``(trace, position, copies)`` or a ``Start``; ``copies`` new
        sequences share ``trace.token_ids[:position]`` and sample token ``position`` onwards. The kept KV cache of
        ``trace`` is re-used (no prefix recomputation). Returns the new traces (sorted by id)."""
        if not forks:
            return []
        starts = []
        for f in forks:
            st = f if isinstance(f, Start) else Start(trace=f[0], position=int(f[1]), copies=int(f[2]) if len(f) > 2
                                                      else 1)
            if st.trace.id not in self.traces:
                self.traces[st.trace.id] = st.trace
            starts.append(Start(st.trace, st.position, st.copies, st.snapshot or self.snapshots.get(st.trace.id)))
        dec = self._decoder(**overrides)
        dec.resume(starts)
        return self._collect(dec, dec.run(hook))

    def tokens_spent(self) -> int:
        return sum(d.stats.tokens_spent for d in self.decoders)

    def pack(self, traces: Sequence[Trace], prompt_index: Sequence[int], *, group_ids: Optional[Sequence[int]] = None,
             trainable: Optional[Sequence[Sequence[float]]] = None, pad_token_id: Optional[int] = None
             ) -> Generation:
        """Rows ``[left-padded prompt | trace tokens | padding]`` of ``traces`` with the tree extras (module doc).

        ``trainable[i]`` (one value per token of trace i) is the loss mask (default: every token).
        """
        pad = pad_token_id if pad_token_id is not None else getattr(self.tokenizer, "pad_token_id", 0) or 0
        return pack_traces(traces, prompt_index, group_ids=group_ids, trainable=trainable, pad_token_id=pad,
                           all_traces=self.traces, node_ids=iter(self.ids),
                           )


# ---------------------------------------------------------------------------------------------------- tree structure
@dataclass
class Tree:
    """Segment tree of a set of traces. ``token_nodes[trace_id][j]``: node of token j of that trace;
    ``parent[node]``: the parent node (0 = the prompt); ``span[node]``: (owning trace id, start, end) positions."""

    token_nodes: dict[int, list[int]] = field(default_factory=dict)
    parent: dict[int, int] = field(default_factory=dict)
    span: dict[int, tuple[int, int, int]] = field(default_factory=dict)


def tree_nodes(traces: Sequence[Trace], all_traces: Optional[dict[int, Trace]] = None,
               node_ids: Optional[Iterable[int]] = None) -> Tree:
    """Rebuild the segment tree from each trace's ``parent`` and ``fork_step`` (module doc). Ancestors not in
    ``traces`` are looked up in ``all_traces``; an unknown ancestor's shared prefix becomes one node per
    (ancestor, fork position). Node ids come from ``node_ids`` (default 1, 2, ...)."""
    known = dict(all_traces or {})
    known.update({t.id: t for t in traces})
    counter = iter(node_ids) if node_ids is not None else itertools.count(1)
    cuts: dict[int, set[int]] = {}
    for t in known.values():
        if t.parent is not None:
            cuts.setdefault(t.parent, set()).add(int(t.fork_step or 0))
    tree = Tree()
    segments: dict[int, list[tuple[int, int, int]]] = {}  # trace id → [(start, end, node)]
    missing: dict[tuple[int, int], int] = {}

    def segs(tid: int) -> list[tuple[int, int, int]]:
        if tid in segments:
            return segments[tid]
        t = known[tid]
        start = int(t.fork_step or 0) if t.parent is not None else 0
        bounds = sorted({start, t.num_tokens} | {s for s in cuts.get(tid, ()) if start < s < t.num_tokens})
        out = []
        first_parent = node_before(t, start)
        for a, b in zip(bounds[:-1], bounds[1:]):
            node = next(counter)
            tree.parent[node] = first_parent if not out else out[-1][2]
            tree.span[node] = (tid, a, b)
            out.append((a, b, node))
        segments[tid] = out
        return out

    def node_before(t: Trace, start: int) -> int:
        """The node holding token start−1 of t's path (0: the prompt)."""
        if start <= 0:
            return 0
        if t.parent is None:
            raise ValueError(f"trace {t.id} has no parent but starts at {start}")
        return node_at(t.parent, start - 1, t)

    def node_at(tid: int, pos: int, child: Trace) -> int:
        if tid not in known:
            key = (tid, int(child.fork_step or 0))
            if key not in missing:
                missing[key] = next(counter)
                tree.parent[missing[key]] = 0
                tree.span[missing[key]] = (tid, 0, key[1])
            return missing[key]
        t = known[tid]
        for a, b, node in segs(tid):
            if a <= pos < b:
                return node
        start = int(t.fork_step or 0) if t.parent is not None else 0
        if pos < start:
            return node_at(t.parent, pos, t)
        raise ValueError(f"position {pos} is beyond trace {tid} ({t.num_tokens} tokens)")

    for t in sorted(known.values(), key=lambda t: t.id):
        segs(t.id)
    for t in traces:
        tree.token_nodes[t.id] = [node_at(t.id, j, t) for j in range(t.num_tokens)]
    return tree


def pack_traces(traces: Sequence[Trace], prompt_index: Sequence[int], *, group_ids: Optional[Sequence[int]] = None,
                trainable: Optional[Sequence[Sequence[float]]] = None, pad_token_id: int = 0,
                all_traces: Optional[dict[int, Trace]] = None, node_ids: Optional[Iterable[int]] = None,
                ) -> Generation:
    """A trainer ``Generation`` of finished traces (rows in the given order) with the tree extras."""
    if len(prompt_index) != len(traces):
        raise ValueError(f"prompt_index has {len(prompt_index)} entries for {len(traces)} traces")
    tree = tree_nodes(traces, all_traces, node_ids)
    B = len(traces)
    P = max(len(t.prompt_ids) for t in traces)
    T = max(1, max(t.num_tokens for t in traces))
    ids = torch.full((B, P + T), pad_token_id, dtype=torch.long)
    att = torch.zeros((B, P + T), dtype=torch.long)
    rmask = torch.zeros((B, T))
    train = torch.zeros((B, T))
    node = torch.zeros((B, T), dtype=torch.long)
    by_id = {**(all_traces or {}), **{t.id: t for t in traces}}
    roots, depth = [], []
    for i, t in enumerate(traces):
        p, L = t.prompt_ids, t.num_tokens
        ids[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
        att[i, P - len(p):P + L] = 1
        if L:
            ids[i, P:P + L] = torch.tensor(t.token_ids, dtype=torch.long)
            node[i, :L] = torch.tensor(tree.token_nodes[t.id], dtype=torch.long)
        rmask[i, :L] = 1.0
        if trainable is None:
            train[i, :L] = 1.0
        else:
            if len(trainable[i]) != L:
                raise ValueError(f"trainable[{i}] has {len(trainable[i])} values for {L} tokens")
            train[i, :L] = torch.tensor([float(x) for x in trainable[i]])
        d, r = 0, t
        while r.parent is not None and r.parent in by_id:
            d, r = d + 1, by_id[r.parent]
        depth.append(d + (1 if r.parent is not None else 0))
        roots.append(r.id if r.parent is None else int(r.parent))
    truncated = torch.tensor([t.finish_reason == "length" for t in traces])
    pi = torch.tensor(list(prompt_index), dtype=torch.long)
    return Generation(
        input_ids=ids, attention_mask=att, prompt_len=P, response_ids=ids[:, P:].clone(), response_mask=rmask,
        truncated=truncated, trainable=train, prompt_index=pi,
        group_ids=pi.clone() if group_ids is None else torch.tensor(list(group_ids), dtype=torch.long),
        extras={"tree_node": node, "tree_root": torch.tensor(roots, dtype=torch.long),
                "fork_pos": torch.tensor([int(t.fork_step or 0) if t.parent is not None else 0 for t in traces]),
                "tree_depth": torch.tensor(depth, dtype=torch.long)},
    )
