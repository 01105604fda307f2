"""The trainer's configuration: typed sections with defaults written once, validated on construction.

Every field has a one-line docstring (the string right under it). Unknown keys and bad values raise
``ConfigError`` naming the key and the allowed values. ``load_config(path, overrides)`` reads YAML and applies
``key.sub=value`` overrides (values parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import yaml

from .. import methods
from ..engine.critic import CriticSettings
from ..env.reward_sources import REWARD_SOURCES
from ..env.tasks import DEFAULT_MAX_NEW_TOKENS, TASKS, build_task_from_settings
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..objective import PolicyObjective

MODEL_DTYPES = ("float32", "bfloat16", "float16")
LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"
    """Packaged default ``smollm2-135m-instruct``, ``tiny`` (random in-memory model, for smoke tests), a local HF
    directory, or a local ``.gguf`` file. Hubs are never contacted."""
    dtype: str = "float32"
    """Weights dtype: float32, bfloat16 or float16."""
    gguf_file: Optional[str] = None
    """GGUF file name inside ``name`` when ``name`` is a directory holding one."""
    lora_rank: int = 0
    """LoRA rank (0 = full fine-tuning). Needs the ``peft`` extra."""
    lora_alpha: float = 32.0
    """LoRA scaling α."""
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names LoRA adapts."""
    expert: Optional[str] = None
    """Expert model for guided rollouts (MENTOR): a local HF directory or ``.gguf`` with the policy's tokenizer;
    None = none (with ``name=tiny``, a second tiny model)."""

    def validate(self) -> None:
        _choice("model.dtype", self.dtype, MODEL_DTYPES)
        _min("model.lora_rank", self.lora_rank, 0)


@dataclass
class DataConfig:
    task: str = "arithmetic"
    """Training data: ``arithmetic`` or ``countdown`` (synthetic, verifiable, from ``seed``), ``tool_arithmetic``
    (large-number arithmetic with a sandboxed calculator tool: multi-turn rollouts, see docs/methods-agentic.md) or
    ``file``."""
    difficulty: Optional[int] = None
    """Arithmetic difficulty level (None = the calibrated default, see docs/tasks.md; tool_arithmetic: 1-3)."""
    path: Optional[str] = None
    """JSONL / Parquet / CSV file or a local HF ``datasets`` directory (with task=file)."""
    prompt_key: str = "prompt"
    """Column holding the question (task=file)."""
    answer_key: str = "answer"
    """Column holding the reference answer (task=file)."""
    system_prompt: Optional[str] = None
    """System prompt of the chat template (None = the task's calibrated default)."""
    heldout_size: int = 32
    """Held-out questions for evaluation (never in training)."""
    format_reward: float = 0.0
    """Extra reward for a present \\boxed{} answer."""
    reward_fn: Optional[str] = None
    """User reward function ``module:function`` with signature fn(completion, example) -> float."""
    reward_source: str = "verifier"
    """``verifier`` (the task's checker or reward_fn), or a label-free source: ``majority_vote`` (TTRL pseudo-labels,
    1 when a response's \\boxed{} answer is equivalent to its group's most frequent answer, else 0) or ``evol_rl``
    (majority selects, novelty varies); works with any method (the verifier still gives reward/accuracy). See
    env/reward_sources.py."""

    reward_limit_s: float = 5.0
    """Wall-clock seconds one completion's reward may take (in a worker process); past it the reward is 0 and
    counted in reward/timeouts."""
    reward_memory_mb: int = 1024
    """Memory cap of each reward worker process in MB; a completion that exceeds it scores 0 (reward/oom)."""
    reward_workers: Optional[int] = None
    """Reward worker processes (None = min(4, CPUs)); rewards of one batch are scored in parallel."""

    TASK_SETTINGS = ("difficulty", "path", "prompt_key", "answer_key")

    def validate(self) -> None:
        _choice("data.task", self.task, TASKS.names())
        if self.task == "file" and not self.path:
            raise ConfigError("data.path is required with data.task=file (a JSONL/Parquet/CSV file or a datasets dir)")
        _min("data.heldout_size", self.heldout_size, 0)
        _choice("data.reward_source", self.reward_source, REWARD_SOURCES.names())
        if not (isinstance(self.reward_limit_s, float) and 0 < self.reward_limit_s < float("inf")):
            raise ConfigError(f"data.reward_limit_s = {self.reward_limit_s!r} must be a number of seconds > 0")
        _min("data.reward_memory_mb", self.reward_memory_mb, 64)
        if self.reward_workers is not None:
            _min("data.reward_workers", self.reward_workers, 1)

    def build_task(self, seed: int):
        """The task, from ``data.task`` and its settings (a setting the task does not take is an error)."""
        defaults = DataConfig()
        return build_task_from_settings(self.task, {"seed": seed, **{k: getattr(self, k) for k in self.TASK_SETTINGS}},
                                        {k: getattr(defaults, k) for k in self.TASK_SETTINGS})


@dataclass
class RolloutConfig:
    n: int = 4
    """Responses sampled per prompt (the group size G)."""
    temperature: float = 1.0
    """Sampling temperature; log-probs and entropies are those of this sampling distribution."""
    top_p: float = 1.0
    """Nucleus sampling threshold."""
    max_new_tokens: Optional[int] = None
    """Response length cap (None = the task's calibrated default)."""

    def budget(self) -> int:
        """The response length cap in effect."""
        return self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS

    def validate(self) -> None:
        _min("rollout.n", self.n, 1)
        if not self.temperature > 0:
            raise ConfigError(f"rollout.temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"rollout.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens is not None:
            _min("rollout.max_new_tokens", self.max_new_tokens, 1)


@dataclass
class AlgorithmConfig:
    method: Union[str, list[str]] = "grpo"
    """A catalog method or a list of methods touching different knobs (see ``entrolab methods``)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Hyperparameter / slot overrides, nested by slot: {clip: {ratio: 1e-3}} (command line
    algorithm.overrides.clip.ratio=1e-3), or a slot's component: {kl: ref_kl}."""

    def validate(self, generation_budget: Optional[int] = None) -> None:
        """Resolve the objective once (every value checked by building each component once); :meth:`objective`
        hands those components out. Validating an unchanged section again reuses the resolution."""
        key = (repr(self.method), repr(self.overrides), generation_budget)
        if getattr(self, "_spec", None) is not None and getattr(self, "_key", None) == key:
            return
        self._spec = methods.resolve_spec(self.method, self.overrides, generation_budget=generation_budget,
                                          key_prefix="algorithm.overrides.")
        self._key = key

    def spec(self) -> "methods.ObjectiveSpec":
        if getattr(self, "_spec", None) is None:
            self.validate()
        return self._spec

    def objective(self) -> "PolicyObjective":
        """The objective of this config (its components were built once, at validation)."""
        return self.spec().build()


@dataclass
class OptimConfig:
    steps: int = 20
    """RL steps (one rollout batch each)."""
    lr: float = 2e-6
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    schedule: str = "constant"
    """Learning-rate schedule after warm-up: constant, linear or cosine (to 0 at the last step)."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 = off)."""
    prompts_per_step: int = 4
    """Prompts per rollout batch (each sampled rollout.n times)."""
    mini_batches: int = 2
    """Optimizer steps per PPO epoch; > 1 makes later updates off-policy, where ratio-based methods act."""
    ppo_epochs: int = 1
    """Passes over each rollout batch."""
    micro_batch_size: int = 8
    """Sequences per forward/backward (gradient accumulation); 0 = whole mini-batch."""
    max_gen_batches: int = 3
    """With dynamic sampling: rollout batches generated at most per step to fill it."""

    def validate(self) -> None:
        _min("optim.steps", self.steps, 1)
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        _choice("optim.schedule", self.schedule, LR_SCHEDULES)
        for k in ("warmup_steps", "micro_batch_size"):
            _min(f"optim.{k}", getattr(self, k), 0)
        for k in ("prompts_per_step", "mini_batches", "ppo_epochs", "max_gen_batches"):
            _min(f"optim.{k}", getattr(self, k), 1)
        _min("optim.grad_clip", self.grad_clip, 0)


@dataclass
class EvalConfig:
    every: int = 10
    """Evaluate on the held-out split every k steps (and at the last step); 0 = never."""
    size: int = 32
    """Held-out questions per evaluation (≤ data.heldout_size)."""
    n_samples: int = 2
    """Samples per question for mean@n and pass@k."""
    k: int = 2
    """k of pass@k (≤ n_samples)."""

    def validate(self) -> None:
        _min("eval.every", self.every, 0)
        _min("eval.size", self.size, 1)
        _min("eval.n_samples", self.n_samples, 1)
        _min("eval.k", self.k, 1)
        if self.k > self.n_samples:
            raise ConfigError(f"eval.k ({self.k}) must be <= eval.n_samples ({self.n_samples})")


@dataclass
class DiagnosticsConfig:
    measure_delta_h: bool = True
    """Measure the actual entropy change on the rollout batch after the update, and the first-order prediction
    −Cov(log π, Δz) from the measured logit change (one extra forward pass)."""
    delta_h_rows: int = 4
    """Responses on which the ΔH check runs: up to this many of one group (a different group each step), whose shared
    prompt is run once; 0 = every response. The check costs a forward pass and V-wide logit evaluations per token,
    so one group keeps it near 3% of a step."""
    high_entropy_threshold: float = 0.672
    """Entropy (nats) above which a token counts as high-entropy (the 80th percentile in 2506.01939)."""
    law_refit_every: int = 5
    """Refit R = −a·exp(H) + b every k steps and log law/a, law/b, law/ceiling, law/r2 (0 = off)."""

    def validate(self) -> None:
        _min("diagnostics.law_refit_every", self.law_refit_every, 0)
        _min("diagnostics.delta_h_rows", self.delta_h_rows, 0)


@dataclass
class LoggingConfig:
    run_dir: Optional[str] = None
    """Run directory (None = runs/<method>-<timestamp>)."""
    tensorboard: bool = True
    """Write TensorBoard event files."""
    samples_per_step: int = 2
    """Rollouts saved per step to samples.jsonl, with per-token entropies."""
    progress: bool = True
    """Show the live progress display."""

    def validate(self) -> None:
        _min("logging.samples_per_step", self.samples_per_step, 0)


@dataclass
class CheckpointConfig:
    every: int = 10
    """Checkpoint every k steps and at the last step (0 = only at the last step)."""
    keep_last: int = 2
    """Checkpoints kept (older ones are deleted)."""

    def validate(self) -> None:
        _min("checkpoint.every", self.every, 0)
        _min("checkpoint.keep_last", self.keep_last, 1)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    critic: CriticSettings = field(default_factory=CriticSettings)
    seed: int = 0
    """Seed of every random generator of the run (data, sampling, method components)."""

    def validate(self) -> "TrainConfig":
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v) and f.name != "algorithm":
                v.validate()
        self.algorithm.validate(generation_budget=self.rollout.budget())
        if self.eval.every and self.eval.size > self.data.heldout_size:
            raise ConfigError(f"eval.size ({self.eval.size}) must be <= data.heldout_size ({self.data.heldout_size})")
        needed = self.algorithm.spec().reward_source
        if needed is not None and self.data.reward_source not in ("verifier", needed):
            raise ConfigError(f"data.reward_source={self.data.reward_source} conflicts with "
                              f"{'+'.join(self.algorithm.spec().methods)}, which needs the {needed} reward source; "
                              "drop data.reward_source")
        return self

    def reward_source(self) -> str:
        """The reward source of the run: the method's own if it names one, else ``data.reward_source``."""
        return self.algorithm.spec().reward_source or self.data.reward_source

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------------------------- helpers
def _choice(key: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} = {value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _min(key: str, value: Any, lo: float) -> None:
    if value < lo:
        raise ConfigError(f"{key} = {value!r} must be >= {lo}")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is list:
        if isinstance(value, list):
            return [_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)] if args else value
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {', '.join(prefix + k for k in unknown)}; "
            f"allowed keys{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in data.items():
        hint = hints[k]
        if dataclasses.is_dataclass(hint):
            kwargs[k] = _build(hint, v, f"{prefix}{k}.")
        else:
            kwargs[k] = _coerce(prefix + k, v, hint)
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    return _build(TrainConfig, data, "").validate()


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=1e-5", "algorithm.method=[dr_grpo, kl_cov]"]`` → nested dict (values parsed as YAML);
    ``algorithm.overrides.clip.ratio=1e-3`` nests like every other key (the canonical override form)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value (e.g. optim.lr=1e-5)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {e}") from None
        if isinstance(value, str) and _looks_float(raw):
            value = float(raw)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {p} is not a section")
        node[parts[-1]] = value
    return out


def _looks_float(raw: str) -> bool:
    try:
        float(raw)
        return True
    except ValueError:
        return False


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) and k != "method":
            out[k] = merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = (),
                method: Optional[str] = None) -> TrainConfig:
    """Defaults ← YAML file ← ``--method`` ← ``key=value`` overrides, then validation."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--config {path}: no such file")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"--config {path}: not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {path}: expected a mapping of sections at the top level")
        data = loaded
    if method is not None:
        names = [m.strip() for m in method.split(",")] if "," in method else method
        data = merge(data, {"algorithm": {"method": names}})
    data = merge(data, parse_overrides(overrides))
    return config_from_dict(data)
