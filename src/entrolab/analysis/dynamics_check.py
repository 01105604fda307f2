"""Check the entropy-dynamics lemma on a real language model: one policy-gradient step, predicted vs. exact ΔH.

Lemma 1 of Cui et al. (arXiv 2505.22617 §3) says that for a softmax policy and a small logit change Δz,

    H(π_after | s) − H(π_before | s) ≈ −Cov_{a∼π_before(·|s)}( log π_before(a|s), Δz_{s,a} ).

The lemma is stated for a tabular softmax; in an LM the logits of all states move together through shared weights,
but the lemma needs nothing about *how* Δz arose, only that it is small. :func:`verify_dynamics` measures it:

1. sample ``group_size`` responses per prompt from π = softmax(z/T) over the full vocabulary (no top-k/top-p), all
   prompts in one left-padded batch with a KV cache, with an explicit ``torch.Generator`` (reproducible);
2. take ONE on-policy policy-gradient step on loss = −(1/N) Σ_{i,t} A_i·log π(o_{i,t}) over the N valid response
   tokens (token-mean; the ratio is 1 on-policy, so the PPO surrogate and its clip are inactive and add nothing
   here) with ``optimizer="sgd"`` (plain SGD, Δθ = −lr·g) or ``"adamw"`` (the trainer's optimizer, fresh state,
   weight decay 0: its first step is Δθ ≈ −lr·g/|g| per parameter, a sign step);
3. for every state s (each response-token position, prompt and earlier tokens as context), compare the
   first-order prediction −Cov_π(log π, Δz) with Δz = z_after − z_before over the full vocabulary on the same
   inputs, against the exact change H_after − H_before.

Advantages. Without ``reward_fn`` each response gets a random advantage ±1 drawn from the seed, balanced within its
group (half +1, half −1: what GRPO's group normalisation gives binary rewards), so the check needs no task or
verifier and always has a non-zero gradient. With ``reward_fn(prompt, response_text) -> float`` the advantages are
GRPO's group-normalised rewards (R − mean_G R) / (std_G R + 1e-6). :func:`verify_dynamics_on_task` is the "real
update": a batch of the task's prompts (default: the trainer's default task), rewards from its verifier, group
advantages, one AdamW step.

Memory stays bounded for large vocabularies: the step keeps only the last hidden states of the N states and a copy
of the output-embedding (LM-head) module; logits are rebuilt ``chunk_tokens`` states at a time, so no (N, V) tensor is
ever held. This needs logits = output_embeddings(last hidden state), which is checked once on the model (it fails
for models with a logit soft-cap). By default the model's weights are restored after the check.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ..env.tasks import DEFAULT_MAX_NEW_TOKENS, build_task
from ..generation.decoder import cache_kwargs, output_cache
from ..ops.dynamics import predicted_entropy_change
from .stats import pearson, spearman

DEFAULT_PROMPTS = (
    "What is 7 + 5? Answer with a number.",
    "Name a prime number larger than 10.",
    "What is 12 times 3? Think step by step.",
    "Write the word 'cat' backwards.",
    "If Tom has 3 apples and buys 4 more, how many apples does he have?",
    "What is the capital of France?",
    "Count from 1 to 5.",
    "Is 21 an even number? Explain briefly.",
)


@dataclass
class DynamicsReport:
    """Predicted (Lemma 1) vs. exact per-state entropy change after one policy-gradient step."""

    n_states: int
    n_responses: int
    n_prompts: int
    lr: float
    temperature: float
    advantage_mode: str  # "random±1" or "reward"
    pearson: float
    spearman: float
    predicted_sum: float
    actual_sum: float
    rel_error_sum: float  # |Σ predicted − Σ actual| / |Σ actual| (ill-conditioned when the states' changes cancel)
    rel_error_states: float  # Σ |predicted − actual| / Σ |actual| over the states
    sign_agreement: float  # fraction of states where predicted and exact ΔH have the same sign
    mean_abs_delta_logit: float  # mean over states and vocabulary of |Δz| (how small the step was)
    max_abs_delta_logit: float
    grad_norm: float
    loss: float
    mean_entropy_before: float
    elapsed_s: float
    predicted: np.ndarray = field(repr=False)  # (n_states,) −Cov_π(log π, Δz)
    actual: np.ndarray = field(repr=False)  # (n_states,) H_after − H_before
    optimizer: str = "sgd"  # "sgd" or "adamw"
    reward_mean: Optional[float] = None  # mean reward of the sampled responses (reward advantages only)
    mixed_groups: Optional[int] = None  # groups whose rewards were not all equal (reward advantages only)
    source: str = ""  # where the batch came from (e.g. "arithmetic task, train examples 0-7")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not isinstance(v, np.ndarray)}

    def describe(self) -> str:
        rewards = ("" if self.reward_mean is None else f", mean reward {self.reward_mean:.3g}, "
                   f"{self.mixed_groups}/{self.n_prompts} groups with mixed rewards")
        src = f"{self.source}; " if self.source else ""
        return (f"dynamics check ({src}{self.n_states} states, {self.n_responses} responses, one {self.optimizer} "
                f"step, lr {self.lr:g}, {self.advantage_mode} advantages{rewards}): "
                f"Pearson {self.pearson:.4f}, Spearman {self.spearman:.4f}, "
                f"ΣΔH predicted {self.predicted_sum:.4g} vs exact {self.actual_sum:.4g} "
                f"(relative error {self.rel_error_sum:.2%}; per state Σ|error|/Σ|ΔH| {self.rel_error_states:.2%}); "
                f"mean |Δz| {self.mean_abs_delta_logit:.3g}")


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(tokenizer, "eos_token_id", None),
                getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(x) for x in src)
    return ids


def _template_prefix(tokenizer) -> str:
    """The part of the chat template rendered before a user message (empty if there is no template)."""
    if not getattr(tokenizer, "chat_template", None):
        return ""
    marker = "\u2063MSG\u2063"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                             add_generation_prompt=True)
    except Exception:  # noqa: BLE001 — a template that cannot render is treated as absent
        return ""
    return text.split(marker)[0] if isinstance(text, str) and marker in text else ""


def encode_prompt(tokenizer, prompt: str, chat_template: Optional[bool] = None) -> list[int]:
    """Token ids of ``prompt``, rendered with the tokenizer's chat template as a user turn.

    ``chat_template=None`` (auto) applies the template when the tokenizer has one and the prompt is not already
    rendered (it does not start with the template's own prefix); True/False force it.
    """
    if chat_template is None:
        prefix = _template_prefix(tokenizer).strip()
        chat_template = bool(prefix) and not prompt.lstrip().startswith(prefix[: min(len(prefix), 32)])
    if chat_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        bos = getattr(tokenizer, "bos_token", None)
        # a prompt rendered beforehand (e.g. by a task's chat template) already holds its BOS: add none again
        ids = tokenizer(prompt, add_special_tokens=not (isinstance(bos, str) and bos and prompt.startswith(bos)))[
            "input_ids"]
    if not ids:
        raise ValueError(f"prompt {prompt!r} encodes to no tokens")
    return list(ids)


@torch.no_grad()
def _sample(model, prompt_ids: list[list[int]], group_size: int, max_new_tokens: int, temperature: float,
            eos: set[int], gen: torch.Generator, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``group_size`` samples of every prompt in one batch: ancestral sampling from softmax(z/T), KV cache.

    Prompts are left-padded with attention mask and explicit position ids (so padding changes nothing but float
    rounding). Returns, per prompt, ``(seqs (G, P + L), mask (G, L))`` *without* padding: mask is 1 on response
    tokens up to and including the first EOS; tokens after it stay in ``seqs`` (causal attention means they never
    influence earlier positions) and are masked out.
    """
    rows = [p for p in prompt_ids for _ in range(group_size)]
    p_max = max(len(p) for p in rows)
    ids = torch.zeros(len(rows), p_max, dtype=torch.long)
    att = torch.zeros(len(rows), p_max, dtype=torch.long)
    for i, p in enumerate(rows):
        ids[i, p_max - len(p):] = torch.tensor(p)
        att[i, p_max - len(p):] = 1
    ids, att = ids.to(device), att.to(device)
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=True)
    past, logits, last_pos = output_cache(out), out.logits[:, -1], pos[:, -1:]
    alive = torch.ones(len(rows), dtype=torch.bool)
    eos_t = torch.tensor(sorted(eos), dtype=torch.long)
    toks, mask = [], []
    for _ in range(max_new_tokens):
        probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)  # (B,)
        toks.append(nxt)
        mask.append(alive.clone())
        if eos:
            alive &= ~torch.isin(nxt, eos_t)
        if not alive.any():
            break
        att = torch.cat([att, torch.ones_like(att[:, :1])], dim=1)
        last_pos = last_pos + 1
        out = model(input_ids=nxt[:, None].to(device), attention_mask=att, position_ids=last_pos,
                    use_cache=True, **cache_kwargs(model, past))
        past, logits = output_cache(out), out.logits[:, -1]
    resp = torch.stack(toks, dim=1)  # (B, L)
    m = torch.stack(mask, dim=1).float()
    groups = []
    for k, p in enumerate(prompt_ids):
        sl = slice(k * group_size, (k + 1) * group_size)
        prompt = torch.tensor([p] * group_size, dtype=torch.long)
        groups.append((torch.cat([prompt, resp[sl]], dim=1).to(device), m[sl].to(device)))
    return groups


def _entropy_f64(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``ops.dynamics.exact_entropy`` in float64. The exact ΔH of a small step is ~1e-6 nats per state, the size of
    float32 rounding of H itself, so H_after − H_before is taken in float64 (the Lemma-1 prediction is a product of
    small terms and is accurate in float32)."""
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def _decoder_and_head(model):
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is None or head is None or decoder is model:
        raise ValueError(f"{type(model).__name__}: verify_dynamics needs a Hugging Face causal LM with "
                         "get_decoder() and get_output_embeddings()")
    return decoder, head


def _states(decoder, seqs: torch.Tensor, p_len: int, r_len: int) -> torch.Tensor:
    """Last hidden states of the positions that predict the response tokens: (G, L, d)."""
    h = decoder(input_ids=seqs).last_hidden_state  # (G, S, d)
    return h[:, p_len - 1: p_len - 1 + r_len]


def _random_advantages(groups, gen: torch.Generator) -> list[torch.Tensor]:
    advs = []
    for g in groups:
        n = g["mask"].shape[0]
        signs = torch.tensor([1.0] * (n // 2) + [-1.0] * (n - n // 2))
        if n == 1:
            signs = torch.tensor([1.0 if torch.rand((), generator=gen) < 0.5 else -1.0])
        advs.append(signs[torch.randperm(n, generator=gen)])
    return advs


def _advantages(groups, reward_fn, tokenizer, gen: torch.Generator, on_constant_rewards: str = "error"):
    """(advantages per group, mode, reward stats). Reward advantages are GRPO's group-normalised rewards."""
    if reward_fn is None:
        return _random_advantages(groups, gen), "random±1", {}
    advs, all_r = [], []
    for g in groups:
        texts = []
        p_len = g["p_len"]
        for row, m in zip(g["seqs"], g["mask"]):
            n_tok = int(m.sum())
            texts.append(tokenizer.decode(row[p_len: p_len + n_tok].tolist(), skip_special_tokens=True))
        r = torch.tensor([float(reward_fn(g["prompt"], t)) for t in texts])
        all_r.append(r)
        advs.append((r - r.mean()) / (r.std(unbiased=False) + 1e-6))
    mixed = sum(int(float(a.abs().sum()) > 0.0) for a in advs)
    stats = {"reward_mean": float(torch.cat(all_r).mean()), "mixed_groups": mixed}
    if mixed == 0:
        if on_constant_rewards == "random":
            return _random_advantages(groups, gen), "random±1 (rewards constant in every group)", stats
        raise ValueError("every group's rewards are equal, so all advantages are 0 and the step does nothing; "
                         "use more prompts / a larger group_size, or reward_fn=None for random ±1 advantages")
    return advs, "reward", stats


def verify_dynamics(
    model,
    tokenizer,
    prompts: Optional[Sequence[str]] = None,
    *,
    lr: float = 1e-4,
    max_new_tokens: int = 24,
    group_size: int = 4,
    seed: int = 0,
    temperature: float = 1.0,
    reward_fn: Optional[Callable[[str, str], float]] = None,
    chunk_tokens: int = 64,
    chat_template: Optional[bool] = None,
    restore: bool = True,
    optimizer: str = "sgd",
    on_constant_rewards: str = "error",
    source: str = "",
) -> DynamicsReport:
    """One real policy-gradient step on ``model``; per-state −Cov_π(log π, Δz) vs. exact ΔH (2505.22617 Lemma 1).

    ``prompts`` default to :data:`DEFAULT_PROMPTS`; each gets ``group_size`` sampled responses of at most
    ``max_new_tokens`` tokens. ``optimizer`` is ``"sgd"`` or ``"adamw"`` (fresh state, weight decay 0) and ``lr``
    its step size: Lemma 1 is first order, so the agreement improves as lr → 0 until float32 rounding of Δz
    dominates (see docs/analysis.md for measured values). ``on_constant_rewards``: with ``reward_fn``, what to do
    when every group's rewards are equal (all advantages 0): ``"error"`` (ValueError) or ``"random"`` (random ±1
    advantages, stated in ``advantage_mode``). ``restore`` puts the original weights back afterwards (it keeps one
    copy of the trainable parameters meanwhile). ``source`` is a free-text label of the batch for the report.
    """
    if lr <= 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a positive number, got {lr}")
    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
    if on_constant_rewards not in ("error", "random"):
        raise ValueError(f"on_constant_rewards must be 'error' or 'random', got {on_constant_rewards!r}")
    if group_size < 1 or max_new_tokens < 1 or chunk_tokens < 1:
        raise ValueError("group_size, max_new_tokens and chunk_tokens must be >= 1")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    prompts = list(DEFAULT_PROMPTS if prompts is None else prompts)
    if not prompts:
        raise ValueError("verify_dynamics needs at least one prompt")
    t0 = time.perf_counter()
    decoder, head = _decoder_and_head(model)
    device = next(model.parameters()).device
    if next(model.parameters()).dtype != torch.float32:
        warnings.warn(f"verify_dynamics: the model is in {next(model.parameters()).dtype}; a small step's logit "
                      "change is below that precision, load the model in float32 for a meaningful check",
                      stacklevel=2)
    was_training = model.training
    model.eval()  # no dropout: the before/after forwards must see the same function up to the update
    gen = torch.Generator().manual_seed(seed)
    eos = _eos_ids(model, tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params] if restore else None
    try:
        encoded = [encode_prompt(tokenizer, p, chat_template) for p in prompts]
        sampled = _sample(model, encoded, group_size, max_new_tokens, temperature, eos, gen, device)
        groups = [{"prompt": p, "seqs": seqs, "mask": mask, "p_len": len(ids)}
                  for p, ids, (seqs, mask) in zip(prompts, encoded, sampled)]
        with torch.no_grad():  # logits must be output_embeddings(last hidden state) for the chunked rebuild
            g0 = groups[0]
            full = model(input_ids=g0["seqs"][:1]).logits[0, g0["p_len"] - 1]
            rebuilt = head(_states(decoder, g0["seqs"][:1], g0["p_len"], 1))[0, 0]
            if not torch.allclose(full.float(), rebuilt.float(), atol=1e-3, rtol=1e-3):
                raise ValueError(f"{type(model).__name__}: its logits are not output_embeddings(last hidden "
                                 "state) (a logit soft-cap or scale?); verify_dynamics cannot rebuild them in chunks")
        advs, adv_mode, reward_stats = _advantages(groups, reward_fn, tokenizer, gen, on_constant_rewards)
        n_total = int(sum(float(g["mask"].sum()) for g in groups))
        if n_total == 0:
            raise ValueError("no response tokens were sampled")

        head_before = copy.deepcopy(head).requires_grad_(False)
        opt = (torch.optim.SGD(params, lr=lr) if optimizer == "sgd"
               else torch.optim.AdamW(params, lr=lr, weight_decay=0.0))
        opt.zero_grad(set_to_none=True)
        h_before, loss_total = [], 0.0
        for g, adv in zip(groups, advs):
            r_len = g["mask"].shape[1]
            hs = _states(decoder, g["seqs"], g["p_len"], r_len)  # (G, L, d)
            logp = torch.log_softmax(head(hs).float() / temperature, dim=-1)  # (G, L, V)
            tok = g["seqs"][:, g["p_len"]:].unsqueeze(-1)
            lp = logp.gather(-1, tok).squeeze(-1)  # (G, L)
            loss = -(adv.to(device)[:, None] * lp * g["mask"]).sum() / n_total  # token-mean over the batch
            loss.backward()
            loss_total += float(loss.detach())
            h_before.append(hs.detach()[g["mask"].bool()])  # (n_g, d)
        grad_norm = math.sqrt(sum(float(p.grad.float().pow(2).sum()) for p in params if p.grad is not None))
        opt.step()
        opt.zero_grad(set_to_none=True)
        del opt  # AdamW keeps two moments per parameter: free them before the after-step forwards

        pred, act, dz_abs_sum, dz_abs_max, h0 = [], [], 0.0, 0.0, []
        with torch.no_grad():
            for g, hb in zip(groups, h_before):
                ha = _states(decoder, g["seqs"], g["p_len"], g["mask"].shape[1])[g["mask"].bool()]  # (n_g, d)
                for i in range(0, hb.shape[0], chunk_tokens):
                    zb = head_before(hb[i: i + chunk_tokens]).float()  # (c, V)
                    dz = head(ha[i: i + chunk_tokens]).float() - zb
                    hb_ent = _entropy_f64(zb, temperature)
                    pred.append(predicted_entropy_change(zb, dz, temperature))
                    act.append(_entropy_f64(zb + dz, temperature) - hb_ent)
                    h0.append(hb_ent)
                    dz_abs_sum += float(dz.abs().sum())
                    dz_abs_max = max(dz_abs_max, float(dz.abs().max()))
        vocab = zb.shape[-1]
    finally:
        if saved is not None:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
        for p in params:
            p.grad = None
        model.train(was_training)

    predicted = torch.cat(pred).double().cpu().numpy()
    actual = torch.cat(act).double().cpu().numpy()
    ps, as_ = float(predicted.sum()), float(actual.sum())
    nz = (predicted != 0) | (actual != 0)
    return DynamicsReport(
        n_states=int(predicted.size), n_responses=sum(int(g["mask"].shape[0]) for g in groups),
        n_prompts=len(groups), lr=float(lr), temperature=float(temperature), advantage_mode=adv_mode,
        pearson=pearson(predicted, actual), spearman=spearman(predicted, actual),
        predicted_sum=ps, actual_sum=as_, rel_error_sum=abs(ps - as_) / abs(as_) if as_ != 0 else float("inf"),
        rel_error_states=float(np.abs(predicted - actual).sum() / max(np.abs(actual).sum(), 1e-300)),
        sign_agreement=float((np.sign(predicted[nz]) == np.sign(actual[nz])).mean()) if nz.any() else float("nan"),
        mean_abs_delta_logit=dz_abs_sum / (predicted.size * vocab), max_abs_delta_logit=dz_abs_max,
        grad_norm=grad_norm, loss=loss_total, mean_entropy_before=float(torch.cat(h0).mean()),
        elapsed_s=time.perf_counter() - t0, predicted=predicted, actual=actual, optimizer=optimizer,
        reward_mean=reward_stats.get("reward_mean"), mixed_groups=reward_stats.get("mixed_groups"), source=source,
    )


def verify_dynamics_on_task(
    model,
    tokenizer,
    task=None,
    *,
    n_prompts: int = 4,
    group_size: int = 4,
    max_new_tokens: Optional[int] = None,
    lr: float = 1e-7,
    optimizer: str = "adamw",
    advantages: str = "auto",
    max_batches: int = 3,
    seed: int = 0,
    temperature: float = 1.0,
    chunk_tokens: int = 64,
) -> DynamicsReport:
    """The dynamics check on a real update: a batch of ``task``'s prompts, rewards from its verifier, GRPO group
    advantages, one ``optimizer`` step of size ``lr``.

    ``task`` is an :class:`entrolab.env.tasks.Task` (default: the trainer's default task, ``build_task()``).
    Prompts are the first ``n_prompts`` of its training stream, rendered with the task's own prompt
    (``task.format_prompt``: the chat template, system prompt and few-shot turns the trainer uses); each gets
    ``group_size`` responses of at most ``max_new_tokens`` tokens (default: the task's calibrated length) sampled at
    ``temperature``; the reward of a response is ``task.score(response, example)[0]``.

    A batch in which every group's rewards are equal gives no gradient; the next ``n_prompts`` examples are drawn
    instead, up to ``max_batches`` batches. ``advantages``: ``"verifier"`` (error when no batch had mixed rewards),
    ``"auto"`` (then fall back to random ±1 advantages on the last batch, e.g. for a random model that never
    answers right; ``advantage_mode`` says so), or ``"random"`` (random ±1 from the start, on the task's prompts).
    """
    if advantages not in ("auto", "verifier", "random"):
        raise ValueError(f"advantages must be 'auto', 'verifier' or 'random', got {advantages!r}")
    if n_prompts < 1 or max_batches < 1:
        raise ValueError("n_prompts and max_batches must be >= 1")
    task = build_task() if task is None else task
    max_new_tokens = DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
    stream = task.train_examples()
    desc = task.describe() if hasattr(task, "describe") else {"name": getattr(task, "name", type(task).__name__)}
    label = ", ".join(f"{k} {desc[k]}" for k in ("difficulty", "seed") if isinstance(desc.get(k), int))
    name = f"{desc.get('name', 'task')} task" + (f" ({label})" if label else "")
    last_err: Optional[ValueError] = None
    for b in range(1 if advantages == "random" else max_batches):
        examples = [next(stream) for _ in range(n_prompts)]
        prompts = [task.format_prompt(tokenizer, ex) for ex in examples]
        by_prompt = dict(zip(prompts, examples))
        src = f"{name}, training examples {b * n_prompts}–{(b + 1) * n_prompts - 1}"

        def reward(prompt: str, response: str) -> float:
            return float(task.score(response, by_prompt[prompt])[0])

        last = b == max_batches - 1
        try:
            return verify_dynamics(
                model, tokenizer, prompts, lr=lr, max_new_tokens=max_new_tokens, group_size=group_size, seed=seed,
                temperature=temperature, reward_fn=None if advantages == "random" else reward,
                chunk_tokens=chunk_tokens, chat_template=False, optimizer=optimizer,
                on_constant_rewards="random" if (advantages == "auto" and last) else "error", source=src)
        except ValueError as e:
            if "advantages are 0" not in str(e):
                raise
            last_err = e
    raise ValueError(f"{name}: in {max_batches} batches of {n_prompts} prompts × {group_size} responses every "
                     f"group's rewards were equal ({last_err}); use advantages='auto' or 'random'")
