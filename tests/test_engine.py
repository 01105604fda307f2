"""The native engine (``entrolab.engine.native``) and the engine contract: components compute their own extras from
the engine's primitives (``knobs/extras.py``), checked against direct computations on a tiny in-memory model; a
component needing a primitive an engine lacks is refused before any work."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from test_trainer import tiny_config

from entrolab import methods
from entrolab.engine.forward import lm_head, response_hidden
from entrolab.engine.models import tiny_model
from entrolab.engine.native import NativeEngine
from entrolab.errors import ConfigError
from entrolab.knobs.extras import answer_start_positions
from entrolab.knobs.objective.base import TERMS, ObjectiveTerm
from entrolab.knobs.objective.bonuses import (
    STAGE_ANSWER,
    STAGE_OTHER,
    STAGE_REFLECTION,
    clamped_entropy_from_logits,
)
from entrolab.train.trainer import Trainer


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=1)


def _trainer(tmp_path, reward_path, tiny, method, **sections):
    model, tok = tiny
    base = dict(algorithm={"method": method}, optim={"steps": 1, "lr": 1e-4, "micro_batch_size": 4},
                checkpoint={"every": 0}, diagnostics={"measure_delta_h": False})
    cfg = tiny_config(tmp_path, reward_path, **{**base, **sections})
    return Trainer(cfg, model=model, tokenizer=tok)


def test_answer_start_is_the_token_that_completes_the_marker(tiny):
    _, tok = tiny
    texts = ["ab</think>cd", "xy\\boxed{3}", "no marker"]
    enc = [tok.encode(t, add_special_tokens=False) for t in texts]
    T = max(map(len, enc))
    ids = torch.tensor([e + [tok.pad_token_id] * (T - len(e)) for e in enc])
    mask = torch.tensor([[1.0] * len(e) + [0.0] * (T - len(e)) for e in enc])
    start = answer_start_positions(tok, ids, mask)
    # character tokenizer: "ab</think>" is 10 characters, so the answer starts at token 10 ("c");
    # "xy\boxed" starts the answer at its backslash, index 2; no marker → T.
    assert start.tolist() == [10, 2, T]


@pytest.mark.parametrize("keep_hidden", [False, True])  # logits from a fresh pass, or the rollout pass's states
def test_rollout_and_forward_extras_match_direct_computations(tmp_path, reward_path, tiny, keep_hidden):
    trainer = _trainer(tmp_path, reward_path, tiny, "simko", diagnostics={"measure_delta_h": keep_hidden})
    rollout = trainer.engine.rollout(0, 2)
    batch = rollout.batch
    ids, att, P = batch.extras["input_ids"], batch.extras["attention_mask"], rollout.prompt_len
    k = trainer.objective.terms[0].top_k
    model = trainer.model
    with torch.no_grad():
        h = response_hidden(model, ids, att, P)
        w, b = lm_head(model)
        logp_all = torch.log_softmax(torch.nn.functional.linear(h, w, b) / trainer.config.rollout.temperature, -1)
    top = logp_all.topk(k, -1)
    assert batch.extras["topk_ids"].shape == (batch.batch_size, batch.response_ids.shape[1], k)
    torch.testing.assert_close(batch.extras["old_topk_logprobs"], top.values, atol=1e-5, rtol=1e-5)
    # the sampled token's log-prob is among the top-K exactly when its id is
    in_top = (batch.extras["topk_ids"] == batch.response_ids[..., None]).any(-1)
    lp_sampled = logp_all.gather(-1, batch.response_ids[..., None]).squeeze(-1)
    torch.testing.assert_close(lp_sampled, batch.old_logprobs, atol=1e-4, rtol=1e-4)
    assert bool(in_top.any())

    # forward extras are differentiable and equal the direct computation
    mb = batch.select(torch.arange(2))
    logp, ent = trainer.engine.forward(mb)
    cur = mb.extras["topk_logprobs"]
    assert cur.requires_grad and cur.shape == mb.extras["topk_ids"].shape
    torch.testing.assert_close(cur.detach(), top.values[:2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logp.detach(), batch.old_logprobs[:2], atol=1e-4, rtol=1e-4)


def test_clamped_entropy_forward_extra_carries_gradient(tmp_path, reward_path, tiny):
    trainer = _trainer(tmp_path, reward_path, tiny, "aent")
    rollout = trainer.engine.rollout(0, 2)
    batch = rollout.batch
    mb = batch.select(torch.arange(2))
    trainer.engine.forward(mb)
    ce = mb.extras["clamped_entropy"]
    p = trainer.objective.terms[0].clamp_p
    with torch.no_grad():
        h = response_hidden(trainer.model, batch.extras["input_ids"][:2], batch.extras["attention_mask"][:2],
                            rollout.prompt_len)
        w, b = lm_head(trainer.model)
        z = torch.nn.functional.linear(h, w, b) / trainer.config.rollout.temperature
    torch.testing.assert_close(ce.detach(), clamped_entropy_from_logits(z, p), atol=1e-5, rtol=1e-5)
    (ce * mb.mask).sum().backward()
    head_grad = lm_head(trainer.model)[0].grad
    assert head_grad is not None and float(head_grad.abs().sum()) > 0
    trainer.model.zero_grad(set_to_none=True)


def test_stage_extra_splits_reflection_and_answer(tmp_path, reward_path, tiny):
    trainer = _trainer(tmp_path, reward_path, tiny, "aepo_he")
    batch = trainer.engine.rollout(0, 2).batch
    stage = batch.extras["stage"]
    valid = batch.mask > 0
    assert bool((stage[~valid] == STAGE_OTHER).all())
    assert bool(((stage[valid] == STAGE_REFLECTION) | (stage[valid] == STAGE_ANSWER)).all())


def test_token_aligned_extras_survive_dynamic_sampling_refills(tmp_path, reward_path, tiny):
    trainer = _trainer(tmp_path, reward_path, tiny, "aepo_he",
                       algorithm={"method": "aepo_he", "overrides": {"sampling": "dynamic_sampling"}},
                       optim={"steps": 1, "lr": 1e-4, "micro_batch_size": 4, "max_gen_batches": 3})
    ra, rb = trainer.engine.rollout(0, 2), trainer.engine.rollout(0, 2)
    a, b = ra.batch, rb.batch
    merged = ra.concat(rb, trainer.tokenizer.pad_token_id).batch
    T = merged.response_ids.shape[1]
    assert merged.extras["stage"].shape == (a.batch_size + b.batch_size, T)
    assert torch.equal(merged.extras["stage"][: a.batch_size, : a.response_ids.shape[1]], a.extras["stage"])
    assert torch.equal(merged.extras["prompt_id"], torch.cat([a.extras["prompt_id"], b.extras["prompt_id"]]))


def test_evol_rl_replaces_rewards_with_label_free_ones(tmp_path, reward_path, tiny):
    trainer = _trainer(tmp_path, reward_path, tiny, "evol_rl")
    assert trainer.engine.reward_source.name == "evol_rl"  # the method names its reward source
    batch = trainer.engine.rollout(0, 2).batch
    # EVOL-RL rewards live in {−1} ∪ [−1, −0.5] ∪ [0.5, 1]: a response without an answer gets −1
    r = batch.rewards
    assert bool((((r >= -1) & (r <= -0.5)) | ((r >= 0.5) & (r <= 1))).all())


def test_a_component_needing_an_unprovided_primitive_is_refused_before_any_work(tmp_path, reward_path):
    @dataclass
    class NeedsMagic(ObjectiveTerm):
        engine_primitives = frozenset({"magic_tensor"})

        def apply(self, loss, batch):
            return loss, {}

    assert "magic_tensor" not in NativeEngine.PROVIDES
    TERMS.register("needs_magic_for_test")(NeedsMagic)
    try:
        cfg = tiny_config(tmp_path, reward_path, algorithm={"method": "grpo",
                                                            "overrides": {"objective": "needs_magic_for_test"}})
        with pytest.raises(ConfigError, match=r"entrolab train cannot run grpo: needs_magic_for_test needs "
                                              r"magic_tensor"):
            Trainer(cfg, model=object(), tokenizer=object())  # refused before the model is touched
    finally:
        TERMS.remove("needs_magic_for_test")


def test_every_catalog_method_is_runnable_by_the_native_engine():
    missing = {}
    for name in methods.method_names():
        try:
            methods.build(name).check_engine("entrolab train", NativeEngine.PROVIDES)
        except ConfigError as e:
            missing[name] = str(e)
    assert not missing, missing


def test_an_engine_without_logits_refuses_the_methods_that_read_them():
    with pytest.raises(ConfigError, match=r"verl cannot run simko: simko needs policy_logits, rollout_logits"):
        methods.build("simko").check_engine("verl", {"texts", "tokenizer"})
    methods.build("clip_cov").check_engine("verl", set())  # log-probs and entropies only: nothing more needed
