"""Batched, KV-cached decoding that measures the sampling distribution's entropy while it decodes.

At each step t and for each live sequence, with z_t the next-token logits and T the temperature, the loop records

    π_t = softmax(z_t / T)                                  the sampling distribution (before top-p truncation)
    H_t = −Σ_a π_t(a) log π_t(a)                            token entropy (nats)
    V_t = Var_{a∼π_t}[−log π_t(a)] = Σ_a π_t(a) (log π_t(a) + H_t)²     varentropy (nats²)
    log π_t(a_t)                                            log-probability of the chosen token
    C_t = KL(U ‖ π_t) = −log |V| − (1/|V|) Σ_a log π_t(a)   self-certainty (Kang et al., arXiv 2502.18581), U uniform
                                                            over the vocabulary V (+∞ if some π_t(a) = 0)

(DTS, arXiv 2511.00640, branches on the pair (H_t, V_t); the other strategies read H_t.) Entropies are of the
temperature-scaled full-vocabulary distribution, as everywhere in entrolab; top-p only restricts what is *sampled*.

The loop works on any Hugging Face causal LM: it calls ``model(input_ids=, attention_mask=, position_ids=,
cache=, use_cache=True)`` (``past_key_values=`` before transformers 5, see ``cache_kwargs``) and reads ``.logits``
and the returned cache. Prompts are left-padded; the
attention mask grows by one column per step and position ids are ``(number of real tokens so far) − 1`` per row,
exactly as ``transformers`` ``generate`` derives them from the mask, so greedy decoding matches ``generate`` token for
token.

Strategies steer decoding with a *hook* called once per step, after the distribution is known and before a token is
chosen. Through the :class:`StepView` it gets, a hook can

- ``stop(row)``: end a sequence (finish reason ``"hook"``);
- ``fork(row, tokens)``: split a sequence into ``len(tokens)`` children, child i taking ``tokens[i]`` at this step.
  Children share the parent's prefix by *copying its KV cache rows* (``index_select`` on the batch axis); the prefix
  is never recomputed;
- ``force(row, tokens)``: queue tokens that the sequence will take over the next steps instead of sampling (e.g. an
  end-of-thinking marker);
- ``decoder.probe(row, tokens)``: read the entropy after a hypothetical continuation without committing it (EAT).

Randomness comes only from the ``torch.Generator`` passed in, so a seeded run is reproducible.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch

__all__ = [
    "DecodeStats",
    "Decoder",
    "Snapshot",
    "Start",
    "can_crop_cache",
    "cat_caches",
    "crop_pad_cache",
    "StepView",
    "Trace",
    "encode_prompts",
    "entropy_varentropy",
    "generate",
    "select_cache",
    "top_k_entropy",
    "top_p_mask",
]

FINISH_REASONS = ("eos", "stop", "length", "hook", "halted")


# ---------------------------------------------------------------------------------------------------------------------
# Distribution statistics
# ---------------------------------------------------------------------------------------------------------------------


def entropy_varentropy(
    logits: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entropy H = −Σ π log π, varentropy V = Σ π (log π + H)² and log π of π = softmax(z/T), over the last axis.

    Computed in float32 from one log-softmax; tokens with π = 0 (logit −inf) contribute 0 to both. Returns
    ``(H, V, log π)`` with shapes ``(...)``, ``(...)``, ``(..., V)``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    p = logp.exp()
    finite = p > 0
    plogp = torch.where(finite, p * logp, torch.zeros_like(p))
    h = -plogp.sum(-1)
    dev = torch.where(finite, logp + h.unsqueeze(-1), torch.zeros_like(p))
    v = (p * dev * dev).sum(-1).clamp_min(0.0)
    return h, v, logp


def top_k_entropy(logp: torch.Tensor, k: int) -> torch.Tensor:
    """Entropy of the top-k renormalised distribution: p̃_j = p_j / Σ_{i∈top-k} p_i, H^k = −Σ_j p̃_j log p̃_j.

    The uncertainty measure of EGL (arXiv 2509.00079) and EAGer (arXiv 2510.11170). ``logp``: log-probs (..., V).
    """
    k = min(int(k), logp.shape[-1])
    top = torch.topk(logp.float(), k, dim=-1).values
    top = top - torch.logsumexp(top, dim=-1, keepdim=True)
    p = top.exp()
    return -(torch.where(p > 0, p * top, torch.zeros_like(p))).sum(-1)


def top_p_mask(logp: torch.Tensor, top_p: float) -> torch.Tensor:
    """Boolean mask of the nucleus: the smallest set of most likely tokens whose mass reaches ``top_p`` (≥ 1 token)."""
    if top_p >= 1.0:
        return torch.ones_like(logp, dtype=torch.bool)
    sorted_logp, order = torch.sort(logp, dim=-1, descending=True)
    cum = sorted_logp.exp().cumsum(-1)
    keep_sorted = (cum - sorted_logp.exp()) < top_p  # mass strictly before this token is below top_p
    keep_sorted[..., 0] = True
    mask = torch.zeros_like(keep_sorted)
    return mask.scatter(-1, order, keep_sorted)


# ---------------------------------------------------------------------------------------------------------------------
# KV cache handling
# ---------------------------------------------------------------------------------------------------------------------


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """The keyword a model's forward takes its KV cache under: ``cache`` (transformers ≥ 5.x, where
    ``past_key_values`` is deprecated) or ``past_key_values`` (earlier versions)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    key = _CACHE_KEY.get(type(base))
    if key is None:
        params = inspect.signature(type(base).forward).parameters
        key = _CACHE_KEY[type(base)] = "cache" if "cache" in params else "past_key_values"
    return {key: cache}


def output_cache(out: Any) -> Any:
    """The KV cache of a model output, under either name (see :func:`cache_kwargs`)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


_CACHE_KEY: dict[type, str] = {}


def select_cache(cache: Any, index: torch.Tensor) -> Any:
    """A new cache holding rows ``index`` of ``cache`` (rows may repeat: that is a fork); ``cache`` is left intact.

    Works with ``transformers`` ``Cache`` objects that keep per-layer objects in ``.layers`` (DynamicCache and its
    sliding/static variants), with legacy ``((k, v), ...)`` tuples, and with any object implementing
    ``batch_select_indices`` (deep-copied first).
    """
    if cache is None:
        return None
    if isinstance(cache, (tuple, list)):
        return type(cache)(tuple(t.index_select(0, index.to(t.device)) for t in layer) for layer in cache)
    layers = getattr(cache, "layers", None)
    if layers is not None and hasattr(cache, "batch_select_indices"):
        new = copy.copy(cache)
        new.layers = [copy.copy(layer) for layer in layers]  # batch_select_indices rebinds tensors; originals survive
        new.batch_select_indices(index)
        return new
    if hasattr(cache, "batch_select_indices"):
        new = copy.deepcopy(cache)
        new.batch_select_indices(index)
        return new
    raise TypeError(f"cannot select batch rows of a cache of type {type(cache).__name__}")


def _seq_tensors(cache: Any) -> Optional[list[tuple[Any, str]]]:
    """(layer, attribute) pairs holding per-position tensors, or None when the cache cannot be cropped row-wise."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        return None
    out = []
    for layer in layers:
        if getattr(layer, "is_sliding", False) or getattr(layer, "is_croppable", True) is False:
            return None
        keys = getattr(layer, "keys", None)
        if not isinstance(keys, torch.Tensor):
            return None
        out += [(layer, a) for a in ("keys", "values") if isinstance(getattr(layer, a, None), torch.Tensor)]
    return out


def can_crop_cache(cache: Any) -> bool:
    """True for caches :func:`crop_pad_cache` handles: legacy ``((k, v), ...)`` tuples and caches whose layers keep
    full-history ``keys``/``values`` tensors (``DynamicCache``), with the position axis −2 of 4-D tensors (else −1)."""
    return isinstance(cache, (tuple, list)) or _seq_tensors(cache) is not None


def _crop_pad(t: torch.Tensor, keep: int, pad_left: int) -> torch.Tensor:
    axis = t.dim() - 2 if t.dim() == 4 else t.dim() - 1
    t = t.narrow(axis, 0, keep)
    if pad_left:
        shape = list(t.shape)
        shape[axis] = pad_left
        t = torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=axis)
    return t


def crop_pad_cache(cache: Any, keep: int, pad_left: int = 0) -> Any:
    """A copy of ``cache`` holding its first ``keep`` positions, preceded by ``pad_left`` zero positions (which the
    attention mask must mark as padding). Keys are stored after the rotary embedding, so moving a position's column
    does not change it: the position ids that matter were applied when it was computed."""
    if isinstance(cache, (tuple, list)):
        return type(cache)(tuple(_crop_pad(t, keep, pad_left) for t in layer) for layer in cache)
    pairs = _seq_tensors(cache)
    if pairs is None:
        raise TypeError(f"cannot crop a cache of type {type(cache).__name__}")
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    remap = {id(old): nl for old, nl in zip(cache.layers, new.layers)}
    for layer, attr in pairs:
        setattr(remap[id(layer)], attr, _crop_pad(getattr(layer, attr), keep, pad_left))
    return new


def cat_caches(caches: Sequence[Any]) -> Any:
    """Stack same-width caches (from :func:`crop_pad_cache`) along the batch axis into a new cache."""
    first = caches[0]
    if isinstance(first, (tuple, list)):
        return type(first)(tuple(torch.cat([c[i][j] for c in caches]) for j in range(len(first[i])))
                           for i in range(len(first)))
    new = copy.copy(first)
    new.layers = [copy.copy(layer) for layer in first.layers]
    for li, layer in enumerate(new.layers):
        for attr in ("keys", "values"):
            if isinstance(getattr(layer, attr, None), torch.Tensor):
                setattr(layer, attr, torch.cat([getattr(c.layers[li], attr) for c in caches]))
    return new


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


# ---------------------------------------------------------------------------------------------------------------------
# Sequences
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Trace:
    """One generated sequence (a leaf of the decoding tree) with its per-token measurements.

    ``entropies[i]``, ``varentropies[i]`` describe the distribution token ``token_ids[i]`` was chosen from;
    ``logprobs[i]`` is its log-probability under the sampling distribution softmax(z/T); ``self_certainties[i]`` is
    KL(U ‖ π) of that distribution (arXiv 2502.18581, module doc); ``forced[i]`` is True for tokens a hook forced. A
    forked child copies its parent's lists up to the fork (``parent``, ``fork_step``).
    """

    id: int
    group: int
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    varentropies: list[float] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    self_certainties: list[float] = field(default_factory=list)
    forced: list[bool] = field(default_factory=list)
    parent: Optional[int] = None
    fork_step: Optional[int] = None
    finish_reason: Optional[str] = None
    text: str = ""  # decoded response without special tokens, set when the trace finishes
    extra: dict[str, Any] = field(default_factory=dict)
    _pending: list[int] = field(default_factory=list, repr=False)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def mean_entropy(self, include_forced: bool = False) -> float:
        """Mean token entropy (nats) over generated tokens (forced ones excluded unless asked); NaN when none."""
        vals = [h for h, f in zip(self.entropies, self.forced) if include_forced or not f]
        return float(sum(vals) / len(vals)) if vals else float("nan")

    def mean_self_certainty(self, include_forced: bool = False) -> float:
        """Self-certainty (Kang et al., arXiv 2502.18581): (1/n) Σ_t KL(U ‖ π_t) over generated tokens (forced ones
        excluded unless asked); higher = more confident; NaN when none."""
        vals = [c for c, f in zip(self.self_certainties, self.forced) if include_forced or not f]
        return float(sum(vals) / len(vals)) if vals else float("nan")

    def sum_logprob(self, include_forced: bool = False) -> float:
        return float(sum(lp for lp, f in zip(self.logprobs, self.forced) if include_forced or not f))

    def fork(self, new_id: int, step: int) -> "Trace":
        return Trace(
            id=new_id, group=self.group, prompt_ids=self.prompt_ids, token_ids=list(self.token_ids),
            entropies=list(self.entropies), varentropies=list(self.varentropies), logprobs=list(self.logprobs),
            self_certainties=list(self.self_certainties), forced=list(self.forced), parent=self.id, fork_step=step, extra=copy.deepcopy(self.extra),
            _pending=list(self._pending),
        )


@dataclass
class DecodeStats:
    """Compute spent. ``sampled_tokens`` counts generated tokens once each (a shared prefix counts once);
    ``probe_tokens`` counts tokens run for probes (never committed); ``tokens_spent`` is their sum."""

    prompt_tokens: int = 0
    sampled_tokens: int = 0
    probe_tokens: int = 0
    forward_calls: int = 0
    forks: int = 0
    max_active: int = 0

    @property
    def tokens_spent(self) -> int:
        return self.sampled_tokens + self.probe_tokens

    def as_dict(self) -> dict[str, int]:
        return {**{k: getattr(self, k) for k in ("prompt_tokens", "sampled_tokens", "probe_tokens", "forward_calls",
                                                 "forks", "max_active")}, "tokens_spent": self.tokens_spent}


@dataclass
class Snapshot:
    """The KV cache of one finished sequence: ``cache`` (one row) and ``mask`` (1, L) hold the prompt and the first
    ``covered`` generated tokens; generated token j sits at column ``col0 + j``."""

    cache: Any
    mask: torch.Tensor
    col0: int
    covered: int


@dataclass
class Start:
    """A fork request for :meth:`Decoder.resume`: ``copies`` new sequences continuing ``trace`` after its first
    ``position`` tokens (each samples token ``position`` afresh), from ``snapshot`` when given."""

    trace: "Trace"
    position: int
    copies: int = 1
    snapshot: Optional[Snapshot] = None


class StepView:
    """What a hook sees at one decoding step, row-aligned with ``traces`` (the live sequences).

    ``logits`` (N, V) raw next-token logits; ``logprobs`` (N, V) log softmax(z/T); ``entropy`` and ``varentropy``
    (N,) in nats. ``step`` is the number of decoding steps already taken.
    """

    def __init__(self, decoder: "Decoder", step: int, logits: torch.Tensor, logprobs: torch.Tensor,
                 entropy: torch.Tensor, varentropy: torch.Tensor):
        self.decoder = decoder
        self.step = step
        self.traces: list[Trace] = decoder.live
        self.logits = logits
        self.logprobs = logprobs
        self.entropy = entropy
        self.varentropy = varentropy
        self._stop: dict[int, str] = {}
        self._fork: dict[int, list[int]] = {}
        self._halt = False

    def stop(self, row: int, reason: str = "hook") -> None:
        """End sequence ``row`` now (it takes no token this step)."""
        self._stop[row] = reason

    def halt(self) -> None:
        """End every live sequence now (finish reason ``"halted"``)."""
        self._halt = True

    def fork(self, row: int, tokens: Sequence[int]) -> None:
        """Split ``row`` into ``len(tokens)`` sequences; the i-th takes ``tokens[i]`` at this step (the original row
        keeps ``tokens[0]``). The children's KV caches are copies of the parent's rows."""
        toks = [int(t) for t in tokens]
        if not toks:
            raise ValueError("fork needs at least one token")
        self._fork[row] = toks

    def force(self, row: int, tokens: Sequence[int]) -> None:
        """Make ``row`` take ``tokens`` over the coming steps, starting with this one, instead of sampling."""
        self.traces[row]._pending.extend(int(t) for t in tokens)

    def text(self, row: int, last: Optional[int] = None) -> str:
        """Decoded generated text of ``row`` (only the last ``last`` tokens if given)."""
        ids = self.traces[row].token_ids
        return self.decoder.decode(ids if last is None else ids[-last:])

    @property
    def num_active(self) -> int:
        return len(self.traces)


Hook = Callable[[StepView], None]


# ---------------------------------------------------------------------------------------------------------------------
# The decoder
# ---------------------------------------------------------------------------------------------------------------------


class Decoder:
    """Batched decoding with a KV cache over a set of live sequences that hooks may stop, fork or force.

    Use: ``dec = Decoder(model, tokenizer, ...); dec.prefill(prompt_ids, num_return_sequences=n); traces =
    dec.run(hook)``. ``greedy=True`` takes argmax z (entropies are still those of softmax(z/T)).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        greedy: bool = False,
        eos_token_id: Union[int, Sequence[int], None] = None,
        pad_token_id: Optional[int] = None,
        stop_strings: Sequence[str] = (),
        generator: Optional[torch.Generator] = None,
        id_start: int = 0,
        keep_cache: bool = False,
    ):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if stop_strings and tokenizer is None:
            raise ValueError("stop_strings need a tokenizer to decode the generated text")
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.greedy = bool(greedy)
        self.stop_strings = tuple(stop_strings)
        self.generator = generator
        self.eos_token_ids = _resolve_eos(model, tokenizer, eos_token_id)
        if pad_token_id is None and tokenizer is not None:
            pad_token_id = getattr(tokenizer, "pad_token_id", None)
        if pad_token_id is None:
            pad_token_id = min(self.eos_token_ids) if self.eos_token_ids else 0
        self.pad_token_id = int(pad_token_id)
        self.device = _model_device(model)
        self._stop_window = max(16, max((len(s) for s in self.stop_strings), default=0) + 4)
        self.stats = DecodeStats()
        self.live: list[Trace] = []
        self.finished: list[Trace] = []  # in the order sequences finished
        self.step = 0
        self._next_id = int(id_start)
        self.keep_cache = bool(keep_cache)
        # trace id → Snapshot of its KV cache row when it finished (``keep_cache=True``), for later forks (resume).
        self.snapshots: dict[int, Snapshot] = {}
        self.cache: Any = None
        self.mask: Optional[torch.Tensor] = None  # (N, L) long
        self.next_logits: Optional[torch.Tensor] = None  # (N, V) float32

    # -- helpers -------------------------------------------------------------------------------------------------------
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any):
        with torch.no_grad():
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                             use_cache=True, **cache_kwargs(self.model, cache))
        self.stats.forward_calls += 1
        return out.logits[:, -1, :].float(), output_cache(out)

    # -- prefill -------------------------------------------------------------------------------------------------------
    def prefill(self, prompts: Sequence[Sequence[int]], num_return_sequences: int = 1,
                groups: Optional[Sequence[int]] = None) -> None:
        """Run the prompts (token ids) once, left-padded, then copy each prompt's cache ``num_return_sequences`` times.

        ``groups[i]`` labels the sequences of prompt i (default: i)."""
        if not prompts:
            raise ValueError("prefill needs at least one prompt")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        n = int(num_return_sequences)
        if n < 1:
            raise ValueError(f"num_return_sequences must be ≥ 1, got {n}")
        groups = list(range(len(prompts))) if groups is None else list(groups)
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        logits, cache = self._forward(ids, mask, positions, None)
        self.stats.prompt_tokens += int(mask.sum())
        index = torch.arange(len(prompts), device=self.device).repeat_interleave(n)
        self.cache = select_cache(cache, index) if n > 1 else cache
        self.mask = mask.index_select(0, index)
        self.next_logits = logits.index_select(0, index)
        self.live = [Trace(id=self._new_id(), group=groups[i], prompt_ids=list(prompts[i]))
                     for i in range(len(prompts)) for _ in range(n)]
        self.stats.max_active = max(self.stats.max_active, len(self.live))

    # -- probes --------------------------------------------------------------------------------------------------------
    def probe(self, row: int, suffix_ids: Sequence[int], *, temperature: float = 1.0, samples: int = 0,
              tokens: int = 1) -> float:
        """Entropy (nats) of the next token after appending ``suffix_ids`` to live sequence ``row``, uncommitted.

        With ``samples = S > 0`` and ``tokens = K > 1``: the Monte Carlo K-token entropy
        (1/S) Σ_s Σ_{k<K} H(π(· | prefix, suffix, a^s_{<k})) along S continuations sampled at ``temperature``
        (the first term is exact and common to all samples). The live cache is not modified.
        """
        suffix = [int(t) for t in suffix_ids]
        if not suffix:
            raise ValueError("probe needs at least one suffix token")
        idx = torch.tensor([row], device=self.device)
        cache = select_cache(self.cache, idx)
        mask = self.mask.index_select(0, idx)
        start = int(mask.sum())
        ids = torch.tensor([suffix], dtype=torch.long, device=self.device)
        mask = torch.cat([mask, torch.ones((1, len(suffix)), dtype=mask.dtype, device=self.device)], dim=1)
        positions = torch.arange(start, start + len(suffix), device=self.device).unsqueeze(0)
        logits, cache = self._forward(ids, mask, positions, cache)
        self.stats.probe_tokens += len(suffix)
        h0, _, logp = entropy_varentropy(logits, temperature)
        if samples <= 0 or tokens <= 1:
            return float(h0[0])
        rep = torch.zeros(samples, dtype=torch.long, device=self.device)
        cache = select_cache(cache, rep)
        mask = mask.index_select(0, rep)
        logp = logp.index_select(0, rep)
        total = torch.full((samples,), float(h0[0]))
        for _ in range(tokens - 1):
            tok = self._sample(logp, top_p=1.0)
            mask = torch.cat([mask, torch.ones((samples, 1), dtype=mask.dtype, device=self.device)], dim=1)
            positions = (mask.sum(-1, keepdim=True) - 1)
            logits, cache = self._forward(tok.unsqueeze(-1), mask, positions, cache)
            self.stats.probe_tokens += samples
            h, _, logp = entropy_varentropy(logits, temperature)
            total += h.cpu()
        return float(total.mean())

    # -- sampling ------------------------------------------------------------------------------------------------------
    def _sample(self, logp: torch.Tensor, top_p: Optional[float] = None) -> torch.Tensor:
        top_p = self.top_p if top_p is None else top_p
        probs = logp.exp()
        if top_p < 1.0:
            probs = torch.where(top_p_mask(logp, top_p), probs, torch.zeros_like(probs))
        gen_device = self.generator.device if self.generator is not None else probs.device
        tok = torch.multinomial(probs.to(gen_device), 1, generator=self.generator).squeeze(-1)
        return tok.to(logp.device)

    def sample_distinct(self, row_logp: torch.Tensor, k: int) -> list[int]:
        """``k`` distinct tokens drawn without replacement from one row's (top-p restricted) distribution."""
        probs = row_logp.exp()
        if self.top_p < 1.0:
            probs = torch.where(top_p_mask(row_logp, self.top_p), probs, torch.zeros_like(probs))
        k = min(k, int((probs > 0).sum()))
        gen_device = self.generator.device if self.generator is not None else probs.device
        return [int(t) for t in torch.multinomial(probs.to(gen_device), k, replacement=False, generator=self.generator)]

    def _snapshot(self, row: int, trace: Trace, covered: int) -> None:
        """Keep row ``row``'s cache, which holds the prompt and ``trace.token_ids[:covered]``."""
        if not self.keep_cache:
            return
        idx = torch.tensor([row], device=self.device)
        self.snapshots[trace.id] = Snapshot(cache=select_cache(self.cache, idx), mask=self.mask.index_select(0, idx),
                                            col0=int(self.mask.shape[1]) - covered, covered=covered)

    # -- forks from finished sequences -------------------------------------------------------------------------------
    def resume(self, starts: Sequence["Start"]) -> None:
        """Make ``starts`` the live sequences: each continues ``start.trace`` from just before its token
        ``start.position`` with ``start.copies`` children (new traces, ``parent`` = that trace's id, ``fork_step`` =
        the position), which then decode with :meth:`run` like prefilled ones.

        With a :class:`Snapshot` for every start and a croppable cache (``transformers`` ``DynamicCache`` or legacy
        tuples), the prefix is never recomputed: each snapshot row is cropped to prompt + ``tokens[:position−1]``,
        the rows are left-padded to one width, and one forward pass over each row's last prefix token gives the
        distribution of the forked token. Otherwise (no snapshot, sliding-window or quantized caches) the prompt +
        prefix is prefilled again — the same distributions, more compute (``stats.prompt_tokens`` counts it).
        """
        if not starts:
            raise ValueError("resume needs at least one start")
        for st in starts:
            if not 0 <= st.position <= st.trace.num_tokens:
                raise ValueError(f"fork position {st.position} outside trace {st.trace.id} "
                                 f"of {st.trace.num_tokens} tokens")
            if st.copies < 1:
                raise ValueError(f"copies must be ≥ 1, got {st.copies}")
        snaps = [st.snapshot for st in starts]
        reuse = all(sn is not None and st.position - 1 <= sn.covered and can_crop_cache(sn.cache)
                    for sn, st in zip(snaps, starts))
        if reuse:
            keeps = [sn.col0 + st.position - 1 for sn, st in zip(snaps, starts)]
            width = max(keeps)
            caches, masks = [], []
            for sn, keep in zip(snaps, keeps):
                caches.append(crop_pad_cache(sn.cache, keep, width - keep))
                masks.append(torch.nn.functional.pad(sn.mask[:, :keep], (width - keep, 0)))
            cache = cat_caches(caches) if width > 0 else None
            mask = torch.cat(masks)
            last = [(st.trace.prompt_ids + st.trace.token_ids[:st.position])[-1] for st in starts]
            mask = torch.cat([mask, torch.ones((len(starts), 1), dtype=mask.dtype, device=self.device)], 1)
            positions = mask.sum(-1, keepdim=True) - 1
            ids = torch.tensor(last, dtype=torch.long, device=self.device).unsqueeze(-1)
            logits, cache = self._forward(ids, mask, positions, cache)
            self.stats.prompt_tokens += len(starts)
        else:
            rows = [st.trace.prompt_ids + st.trace.token_ids[:st.position] for st in starts]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r):] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            positions = (mask.cumsum(-1) - 1).clamp_min(0)
            logits, cache = self._forward(ids, mask, positions, None)
            self.stats.prompt_tokens += int(mask.sum())
        index = torch.arange(len(starts), device=self.device).repeat_interleave(
            torch.tensor([st.copies for st in starts], device=self.device))
        self.cache = select_cache(cache, index)
        self.mask = mask.index_select(0, index)
        self.next_logits = logits.index_select(0, index)
        self.live = []
        for st in starts:
            t, p = st.trace, st.position
            for _ in range(st.copies):
                self.live.append(Trace(
                    id=self._new_id(), group=t.group, prompt_ids=t.prompt_ids, token_ids=t.token_ids[:p],
                    entropies=t.entropies[:p], varentropies=t.varentropies[:p], logprobs=t.logprobs[:p],
                    self_certainties=t.self_certainties[:p], forced=t.forced[:p], parent=t.id, fork_step=p, extra=copy.deepcopy(t.extra)))
        self.stats.forks += len(self.live)
        self.stats.max_active = max(self.stats.max_active, len(self.live))

    def _finish(self, trace: Trace, reason: str) -> None:
        trace.finish_reason = reason
        trace.text = self.decode(trace.token_ids, skip_special_tokens=True)
        trace._pending.clear()
        self.finished.append(trace)

    # -- main loop -----------------------------------------------------------------------------------------------------
    def run(self, hook: Optional[Hook] = None, until: Optional[Callable[["Decoder"], bool]] = None) -> list[Trace]:
        """Decode until every sequence has finished; returns all traces in the order they finished.

        ``hook(view)`` runs once per step before tokens are chosen; ``until(decoder)`` runs after each step and, when
        True, ends the remaining sequences (``"halted"``) without another forward pass.
        """
        if self.next_logits is None:
            raise RuntimeError("call prefill() before run()")
        while self.live:
            logits = self.next_logits
            h, v, logp = entropy_varentropy(logits, self.temperature)
            view = StepView(self, self.step, logits, logp, h, v)
            if hook is not None:
                hook(view)
            if view._halt:
                for r, tr in enumerate(self.live):
                    self._snapshot(r, tr, len(tr.token_ids))
                    self._finish(tr, "halted")
                self.live = []
                break
            need_sample = [r for r, tr in enumerate(self.live)
                           if r not in view._stop and not tr._pending and r not in view._fork]
            chosen: dict[int, int] = {}
            if need_sample:
                rows = torch.tensor(need_sample, device=logits.device)
                if self.greedy:
                    toks = logits.index_select(0, rows).argmax(-1)
                else:
                    toks = self._sample(logp.index_select(0, rows))
                chosen = dict(zip(need_sample, toks.tolist()))
            h_l, v_l = h.tolist(), v.tolist()
            c_l = (-logp.mean(-1) - math.log(logp.shape[-1])).tolist()  # self-certainty KL(U ‖ π_t)
            parents: list[int] = []
            survivors: list[Trace] = []
            new_tokens: list[int] = []
            for r, tr in enumerate(self.live):
                if r in view._stop:
                    self._snapshot(r, tr, len(tr.token_ids))
                    self._finish(tr, view._stop[r])
                    continue
                if tr._pending:
                    branches = [(tr, tr._pending.pop(0), True)]
                elif r in view._fork:
                    toks = view._fork[r]
                    branches = [(tr, toks[0], False)]
                    for t in toks[1:]:
                        branches.append((tr.fork(self._new_id(), len(tr.token_ids)), t, False))
                    self.stats.forks += len(toks) - 1
                else:
                    branches = [(tr, chosen[r], False)]
                for seq, tok, forced in branches:
                    seq.token_ids.append(tok)
                    seq.entropies.append(h_l[r])
                    seq.varentropies.append(v_l[r])
                    seq.logprobs.append(float(logp[r, tok]))
                    seq.self_certainties.append(c_l[r])
                    seq.forced.append(forced)
                    self.stats.sampled_tokens += 1
                    reason = self._finish_reason(seq, tok)
                    if reason is not None:
                        self._snapshot(r, seq, len(seq.token_ids) - 1)
                        self._finish(seq, reason)
                    else:
                        survivors.append(seq)
                        parents.append(r)
                        new_tokens.append(tok)
            self.step += 1
            self.live = survivors
            if until is not None and self.live and until(self):
                for r, tr in zip(parents, self.live):
                    self._snapshot(r, tr, len(tr.token_ids) - 1)
                    self._finish(tr, "halted")
                self.live = []
            if not self.live:
                break
            self.stats.max_active = max(self.stats.max_active, len(self.live))
            index = torch.tensor(parents, device=self.device)
            if len(parents) != self.mask.shape[0] or parents != list(range(len(parents))):
                self.cache = select_cache(self.cache, index)
                self.mask = self.mask.index_select(0, index)
            self.mask = torch.cat(
                [self.mask, torch.ones((len(parents), 1), dtype=self.mask.dtype, device=self.device)], dim=1)
            positions = self.mask.sum(-1, keepdim=True) - 1
            input_ids = torch.tensor(new_tokens, dtype=torch.long, device=self.device).unsqueeze(-1)
            self.next_logits, self.cache = self._forward(input_ids, self.mask, positions, self.cache)
        return self.finished

    def _finish_reason(self, seq: Trace, tok: int) -> Optional[str]:
        if tok in self.eos_token_ids:
            return "eos"
        if self.stop_strings:
            tail = self.decode(seq.token_ids[-self._stop_window:])
            if any(s in tail for s in self.stop_strings):
                return "stop"
        if len(seq.token_ids) >= self.max_new_tokens:
            return "length"
        return None


def _resolve_eos(model: Any, tokenizer: Any, eos: Union[int, Sequence[int], None]) -> frozenset[int]:
    if eos is None:
        gen_cfg = getattr(model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
        if eos is None and tokenizer is not None:
            eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return frozenset()
    if isinstance(eos, int):
        return frozenset([eos])
    return frozenset(int(e) for e in eos)


# ---------------------------------------------------------------------------------------------------------------------
# Convenience
# ---------------------------------------------------------------------------------------------------------------------


def encode_prompts(tokenizer: Any, prompts: Sequence[Union[str, Sequence[int]]]) -> list[list[int]]:
    """Token ids of each prompt: strings are tokenized without adding special tokens (chat-templated prompts already
    carry them); id lists pass through."""
    out = []
    for p in prompts:
        if isinstance(p, str):
            if tokenizer is None:
                raise ValueError("string prompts need a tokenizer")
            out.append(list(tokenizer.encode(p, add_special_tokens=False)))
        else:
            out.append([int(t) for t in p])
    return out


@dataclass
class Generation:
    """Result of :func:`generate`: the traces (in finishing order) and the compute spent."""

    traces: list[Trace]
    stats: DecodeStats

    def by_group(self) -> dict[int, list[Trace]]:
        out: dict[int, list[Trace]] = {}
        for t in sorted(self.traces, key=lambda t: t.id):
            out.setdefault(t.group, []).append(t)
        return out


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Union[str, Sequence[int]]],
    *,
    num_return_sequences: int = 1,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
    eos_token_id: Union[int, Sequence[int], None] = None,
    stop_strings: Sequence[str] = (),
    generator: Optional[torch.Generator] = None,
    hook: Optional[Hook] = None,
    until: Optional[Callable[[Decoder], bool]] = None,
) -> Generation:
    """Decode ``num_return_sequences`` continuations of each prompt, recording H_t and V_t per token (module doc)."""
    dec = Decoder(model, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                  greedy=greedy, eos_token_id=eos_token_id, stop_strings=stop_strings, generator=generator)
    dec.prefill(encode_prompts(tokenizer, prompts), num_return_sequences=num_return_sequences)
    traces = dec.run(hook, until)
    return Generation(traces=traces, stats=dec.stats)


def iter_rows(view: StepView) -> Iterable[tuple[int, Trace]]:
    """``(row, trace)`` pairs of a step's live sequences."""
    return enumerate(view.traces)


def nats_to(value: float, base: Optional[float]) -> float:
    """Convert an entropy in nats to ``base`` (None or e: nats; 2: bits)."""
    return value if base is None or base == math.e else value / math.log(base)
