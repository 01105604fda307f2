"""The trainer's configuration: typed sections with defaults written once, validated on construction.

Every field has a one-line docstring (the string right under it) and declares what it accepts next to its default
(``setting(default, lo=..., choices=..., ...)``, checked by ``train/checks.py`` for every source: YAML, overrides,
``--resume``, Python). Unknown keys and bad values raise ``ConfigError`` naming the key, the value and what is
allowed. ``load_config(path, overrides)`` reads YAML and applies
``key.sub=value`` overrides (values parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import yaml

from .. import methods
from ..engine.critic import CRITIC_KINDS, CriticSettings
from ..engine.models import PACKAGED_DEFAULT, TINY
from ..env.reward_sources import REWARD_SOURCES
from ..env.rewards import check_reward_spec
from ..env.tasks import DEFAULT_MAX_NEW_TOKENS, TASKS, build_task_from_settings
from ..errors import ConfigError
from ..files import read_yaml
from .checks import check_section, checked, coerce, setting

if TYPE_CHECKING:
    from ..objective import PolicyObjective

MODEL_DTYPES = ("float32", "bfloat16", "float16")
LR_SCHEDULES = ("constant", "linear", "cosine")


@checked
@dataclass
class ModelConfig:
    name: str = setting("smollm2-135m-instruct", delegated="smollm2-135m-instruct, tiny, or an existing path")
    """Packaged default ``smollm2-135m-instruct``, ``tiny`` (random in-memory model, for smoke tests), a local HF
    directory, or a local ``.gguf`` file. Hubs are never contacted."""
    dtype: str = setting("float32", choices=MODEL_DTYPES)
    """Weights dtype: float32, bfloat16 or float16."""
    gguf_file: Optional[str] = setting(None, text=True, nonempty=True)
    """GGUF file name inside ``name`` when ``name`` is a directory holding one."""
    lora_rank: int = setting(0, lo=0)
    """LoRA rank (0 = full fine-tuning). Needs the ``peft`` extra."""
    lora_alpha: float = setting(32.0, lo=0, lo_open=True)
    """LoRA scaling α."""
    lora_targets: list[str] = setting(factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], text=True,
                                      nonempty=True)
    """Module names LoRA adapts."""
    expert: Optional[str] = setting(None, delegated="tiny or an existing path")
    """Expert model for guided rollouts (MENTOR): a local HF directory or ``.gguf`` with the policy's tokenizer;
    None = none (with ``name=tiny``, a second tiny model)."""

    def validate(self) -> None:
        if self.gguf_file is not None and not os.path.isdir(os.path.expanduser(self.name)):
            raise ConfigError(f"model.gguf_file = {self.gguf_file!r} applies only when model.name is a directory "
                              f"holding GGUF files (model.name = {self.name!r}); remove it, or give the .gguf file "
                              "itself as model.name")
        for key, name in (("model.name", self.name), ("model.expert", self.expert)):
            if name is not None and name != TINY and name.strip().lower() != PACKAGED_DEFAULT \
                    and not os.path.exists(os.path.expanduser(name)):
                raise ConfigError(f"{key} = {name!r}: no such file or directory; give {PACKAGED_DEFAULT}, {TINY}, a "
                                  "local Hugging Face model directory or a local .gguf file (models load offline)")


@checked
@dataclass
class DataConfig:
    task: str = setting("arithmetic", choices=TASKS.names)
    """Training data: ``arithmetic`` or ``countdown`` (synthetic, verifiable, from ``seed``), ``tool_arithmetic``
    (large-number arithmetic with a sandboxed calculator tool: multi-turn rollouts, see docs/methods-agentic.md) or
    ``file``."""
    difficulty: Optional[int] = setting(None, lo=1)
    """Arithmetic difficulty level (None = the calibrated default, see docs/tasks.md; tool_arithmetic: 1-3)."""
    path: Optional[str] = setting(None, path="exists")
    """JSONL / Parquet / CSV file or a local HF ``datasets`` directory (with task=file)."""
    prompt_key: str = setting("prompt", text=True, nonempty=True)
    """Column holding the question (task=file)."""
    answer_key: str = setting("answer", text=True, nonempty=True)
    """Column holding the reference answer (task=file)."""
    system_prompt: Optional[str] = setting(None, text=True)
    """System prompt of the chat template (None = the task's calibrated default)."""
    heldout_size: int = setting(32, lo=0)
    """Held-out questions for evaluation (never in training)."""
    format_reward: float = setting(0.0, lo=0)
    """Extra reward for a present \\boxed{} answer."""
    reward_fn: Optional[str] = setting(None, delegated="module:function or path/file.py:function")
    """User reward function ``module:function`` with signature fn(completion, example) -> float."""
    reward_source: str = setting("verifier", choices=REWARD_SOURCES.names)
    """``verifier`` (the task's checker or reward_fn), or a label-free source: ``majority_vote`` (TTRL pseudo-labels,
    1 when a response's \\boxed{} answer is equivalent to its group's most frequent answer, else 0) or ``evol_rl``
    (majority selects, novelty varies); works with any method (the verifier still gives reward/accuracy). See
    env/reward_sources.py."""

    reward_limit_s: float = setting(5.0, lo=0, lo_open=True)
    """Wall-clock seconds one completion's reward may take (in a worker process); past it the reward is 0 and
    counted in reward/timeouts."""
    reward_memory_mb: int = setting(1024, lo=64)
    """Memory cap of each reward worker process in MB; a completion that exceeds it scores 0 (reward/oom)."""
    reward_workers: Optional[int] = setting(None, lo=1)
    """Reward worker processes (None = min(4, CPUs)); rewards of one batch are scored in parallel."""

    TASK_SETTINGS = ("difficulty", "path", "prompt_key", "answer_key")

    def validate(self) -> None:
        if self.task == "file" and not self.path:
            raise ConfigError("data.path is required with data.task=file (a JSONL/Parquet/CSV file or a datasets dir)")
        if self.reward_fn is not None:
            check_reward_spec("data.reward_fn", self.reward_fn)

    def build_task(self, seed: int):
        """The task, from ``data.task`` and its settings (a setting the task does not take is an error)."""
        defaults = DataConfig()
        return build_task_from_settings(self.task, {"seed": seed, **{k: getattr(self, k) for k in self.TASK_SETTINGS}},
                                        {k: getattr(defaults, k) for k in self.TASK_SETTINGS})


@checked
@dataclass
class RolloutConfig:
    n: int = setting(4, lo=1)
    """Responses sampled per prompt (the group size G)."""
    temperature: float = setting(1.0, lo=0, lo_open=True)
    """Sampling temperature; log-probs and entropies are those of this sampling distribution."""
    top_p: float = setting(1.0, lo=0, hi=1, lo_open=True)
    """Nucleus sampling threshold."""
    max_new_tokens: Optional[int] = setting(None, lo=1)
    """Response length cap (None = the task's calibrated default)."""

    def budget(self) -> int:
        """The response length cap in effect."""
        return self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS


@checked
@dataclass
class AlgorithmConfig:
    method: Union[str, list[str]] = setting("grpo", delegated="a catalog method or a list of them")
    """A catalog method or a list of methods touching different knobs (see ``entrolab methods``)."""
    overrides: dict[str, Any] = setting(factory=dict, delegated="slot → component or parameters")
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


@checked
@dataclass
class OptimConfig:
    steps: int = setting(20, lo=1)
    """RL steps (one rollout batch each)."""
    lr: float = setting(2e-6, lo=0, hi=1, lo_open=True)
    """AdamW learning rate."""
    weight_decay: float = setting(0.0, lo=0)
    """AdamW weight decay."""
    schedule: str = setting("constant", choices=LR_SCHEDULES)
    """Learning-rate schedule after warm-up: constant, linear or cosine (to 0 at the last step)."""
    warmup_steps: int = setting(0, lo=0)
    """Linear warm-up steps."""
    grad_clip: float = setting(1.0, lo=0)
    """Gradient-norm clip (0 = off)."""
    prompts_per_step: int = setting(4, lo=1)
    """Prompts per rollout batch (each sampled rollout.n times)."""
    mini_batches: int = setting(2, lo=1)
    """Optimizer steps per PPO epoch; > 1 makes later updates off-policy, where ratio-based methods act."""
    ppo_epochs: int = setting(1, lo=1)
    """Passes over each rollout batch."""
    micro_batch_size: int = setting(8, lo=0)
    """Sequences per forward/backward (gradient accumulation); 0 = whole mini-batch."""
    max_gen_batches: int = setting(3, lo=1)
    """With dynamic sampling: rollout batches generated at most per step to fill it."""
    max_nonfinite_steps: int = setting(3, lo=1)
    """Steps in a row with a non-finite loss, gradient or update (each skipped, the weights kept as they were) after
    which the run stops with an error."""


@checked
@dataclass
class EvalConfig:
    every: int = setting(10, lo=0)
    """Evaluate on the held-out split every k steps (and at the last step); 0 = never."""
    size: int = setting(32, lo=1)
    """Held-out questions per evaluation (≤ data.heldout_size)."""
    n_samples: int = setting(2, lo=1)
    """Samples per question for mean@n and pass@k."""
    k: int = setting(2, lo=1)
    """k of pass@k (≤ n_samples)."""

    def validate(self) -> None:
        if self.k > self.n_samples:
            raise ConfigError(f"eval.k ({self.k}) must be <= eval.n_samples ({self.n_samples})")


@checked
@dataclass
class DiagnosticsConfig:
    measure_delta_h: bool = True
    """Measure the actual entropy change on the rollout batch after the update, and the first-order prediction
    −Cov(log π, Δz) from the measured logit change (one extra forward pass)."""
    delta_h_rows: int = setting(4, lo=0)
    """Responses on which the ΔH check runs: up to this many of one group (a different group each step), whose shared
    prompt is run once; 0 = every response. The check costs a forward pass and V-wide logit evaluations per token,
    so one group keeps it near 3% of a step."""
    high_entropy_threshold: float = setting(0.672, lo=0)
    """Entropy (nats) above which a token counts as high-entropy (the 80th percentile in 2506.01939)."""
    law_refit_every: int = setting(5, lo=0)
    """Refit R = −a·exp(H) + b every k steps and log law/a, law/b, law/ceiling, law/r2 (0 = off)."""
    no_signal_steps: int = setting(3, lo=0)
    """Warn (live line, log) when every group has had identical rewards for this many steps in a row: no learning
    signal (update/no_signal_streak counts them; 0 = never warn)."""


@checked
@dataclass
class LoggingConfig:
    run_dir: Optional[str] = setting(None, path="parent")
    """Run directory (None = runs/<method>-<timestamp>)."""
    tensorboard: bool = True
    """Write TensorBoard event files."""
    samples_per_step: int = setting(2, lo=0)
    """Rollouts saved per step to samples.jsonl, with per-token entropies."""
    progress: bool = True
    """Show the live progress display."""


@checked
@dataclass
class CheckpointConfig:
    every: int = setting(10, lo=0)
    """Checkpoint every k steps and at the last step (0 = only at the last step)."""
    keep_last: int = setting(2, lo=1)
    """Checkpoints kept (older ones are deleted)."""


@checked
@dataclass
class CriticConfig:
    kind: str = setting("head", choices=CRITIC_KINDS)
    """``head``: a linear value head on the policy's final hidden states (detached; trains the head only);
    ``model``: a separate critic model (a copy of the policy, or ``critic.model``) with its own head, trained whole."""
    model: Optional[str] = setting(None, path="exists")
    """With kind=model: a local HF directory or ``.gguf`` for the critic's weights (None = a copy of the policy)."""
    lr: float = setting(1e-5, lo=0, hi=1, lo_open=True)
    """AdamW learning rate of the critic (verl's critic.optim.lr 1e-5)."""
    clip: Optional[float] = setting(0.5, lo=0, lo_open=True)
    """Value clip c: predictions are clipped to V_old ± c in the loss (verl's cliprange_value 0.5); None = unclipped."""
    grad_clip: float = setting(1.0, lo=0)
    """Gradient-norm clip of the critic's own step (verl's critic grad_clip 1.0; 0 = off)."""
    weight_decay: float = setting(0.0, lo=0)
    """AdamW weight decay of the critic."""
    init_std: float = setting(0.02, lo=0)
    """Standard deviation of the value head's initial weights (Hugging Face's initializer_range 0.02; bias 0)."""

    def validate(self) -> None:
        self.settings().validate()

    def settings(self) -> CriticSettings:
        """The engine's critic settings (used only by methods that need the ``values`` primitive: gae, ppo)."""
        return CriticSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


@checked
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
    critic: CriticConfig = field(default_factory=lambda: CriticConfig())
    seed: int = setting(0, lo=0, hi=2**32 - 1)
    """Seed of every random generator of the run (data, sampling, method components)."""

    def validate(self) -> "TrainConfig":
        check_section(self, "")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v):
                check_section(v, f"{f.name}.")
                if f.name != "algorithm" and hasattr(v, "validate"):
                    v.validate()
        self.algorithm.validate(generation_budget=self.rollout.budget())
        if self.eval.every and self.eval.size > self.data.heldout_size:
            raise ConfigError(f"eval.size ({self.eval.size}) must be <= data.heldout_size ({self.data.heldout_size})")
        needed = self.algorithm.spec().reward_source
        if needed is not None and self.data.reward_source not in ("verifier", needed):
            raise ConfigError(f"data.reward_source={self.data.reward_source} conflicts with "
                              f"{'+'.join(self.algorithm.spec().methods)}, which needs the {needed} reward source; "
                              "drop data.reward_source")
        spec = self.algorithm.spec()
        if self.rollout.n == 1 and spec.group_relative():
            raise ConfigError(f"rollout.n = 1 with {'+'.join(spec.methods)}: its {spec.advantage_name()} advantage is "
                              "group-relative (each response against the other responses to its prompt), so one "
                              "response per prompt makes every advantage 0 and nothing is learned; set rollout.n >= 2")
        return self

    def reward_source(self) -> str:
        """The reward source of the run: the method's own if it names one, else ``data.reward_source``."""
        return self.algorithm.spec().reward_source or self.data.reward_source

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------------------------- helpers
_coerce = coerce  # the type check of one value (train/checks.py)


def _key(k: Any) -> str:
    return k if isinstance(k, str) and k.strip() else repr(k)


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown config key {', '.join(prefix + _key(k) for k in unknown)}; "
            f"allowed keys{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in data.items():
        hint = hints[k]
        if dataclasses.is_dataclass(hint):
            kwargs[k] = _build(hint, {} if v is None else v, f"{prefix}{k}.")
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
        parts = key.strip().split(".")
        if not all(p.strip() for p in parts):
            raise ConfigError(f"override {item!r} has an empty key part; write key.sub=value (e.g. optim.lr=1e-5)")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"override {key}: cannot parse value {raw!r} ({problem})") from None
        if isinstance(value, str) and _looks_float(raw):
            value = float(raw)
        node = out
        for i, p in enumerate(parts[:-1]):
            if isinstance(node.get(p), str) and _is_slot(parts[:i + 1]):  # kl=ref_kl, then kl.coef=...
                node[p] = {"name": node[p]}
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {'.'.join(parts[:i + 1])} is given a value and sub-keys")
        last = parts[-1]
        if isinstance(node.get(last), dict) and node[last]:
            if not (isinstance(value, str) and _is_slot(parts)):
                raise ConfigError(f"override {key}: {key.strip()} is given a value and sub-keys")
            value = {**node[last], "name": value}  # kl.coef=..., then kl=ref_kl
        node[last] = value
    return out


def _is_slot(parts: Sequence[str]) -> bool:
    """``algorithm.overrides.<slot>``: a slot may be named by its component and given parameters too."""
    return len(parts) == 3 and parts[0] == "algorithm" and parts[1] == "overrides"


def _looks_float(raw: str) -> bool:
    try:
        float(raw)
        return True
    except ValueError:
        return False


def merge(base: dict[str, Any], extra: Mapping[str, Any], _path: str = "") -> dict[str, Any]:
    """``extra`` over ``base``, mappings merged key by key. A mapping never silently replaces a value of another
    kind: a section given as a scalar is an error, and a slot named by its component (``algorithm.overrides.kl:
    ref_kl``) merged with parameters becomes ``{name: ref_kl, ...parameters}``."""
    out = dict(base)
    for k, v in extra.items():
        old = out.get(k)
        if isinstance(v, Mapping) and isinstance(old, Mapping) and k != "method":
            out[k] = merge(dict(old), v, f"{_path}{k}.")
        elif isinstance(v, Mapping) and isinstance(old, str) and _path == "algorithm.overrides." and "name" not in v:
            out[k] = {"name": old, **v}
        elif isinstance(v, Mapping) and old is not None and not isinstance(old, Mapping) and k != "method":
            raise ConfigError(f"{_path}{k} = {old!r} is not a mapping, but {', '.join(f'{_path}{k}.{x}' for x in v)} "
                              f"{'is' if len(v) == 1 else 'are'} set too; write {_path}{k} as a mapping of keys")
        else:
            out[k] = v
    return out


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = (),
                method: Optional[str] = None) -> TrainConfig:
    """Defaults ← YAML file ← ``--method`` ← ``key=value`` overrides, then validation."""
    data: dict[str, Any] = {}
    if path is not None:
        loaded = read_yaml(path, what="config file") or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (model:, data:, optim:, ...) at the top level, "
                              f"got a {type(loaded).__name__}")
        data = loaded
    if method is not None:
        names = [m.strip() for m in method.split(",")] if "," in method else method
        data = merge(data, {"algorithm": {"method": names}})
    data = merge(data, parse_overrides(overrides))
    return config_from_dict(data)
