"""The bad-input battery: every wrong config value, data file, reward function, resume, run directory and analysis or
inference input a new user might give, run through the command line as they would type it. Each must end with a
non-zero exit and one line ``entrolab: error: …`` naming the field or file — never a traceback (an uncaught exception
fails the test with its own), never a silent success.

Inputs that need a trained run share one tiny one-step run (``trained_run``); the rest fail before any model loads.
The crash tests (kill -9) are in ``tests/test_crash.py``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest
import yaml

from entrolab.cli import main

BAD_UTF8 = b'{"prompt": "caf\xe9", "answer": "1"}\n'

REWARDS = {
    "ok.py": "def fn(completion, example):\n    return float('a' in completion)\nNOT_CALLABLE = 3\n",
    "syntax.py": "def fn(completion, example)\n    return 1.0\n",
    "raises.py": "import math\nX = 1 / 0\n\ndef fn(completion, example):\n    return 1.0\n",
    "latin1.py": None,  # written as bytes below
}


def _tiny(run_dir: Path) -> list[str]:
    """Overrides of a one-step tiny-model run (what the cases that get past validation would run)."""
    return ["model.name=tiny", "optim.steps=1", "rollout.n=2", "rollout.max_new_tokens=4", "optim.prompts_per_step=1",
            "optim.mini_batches=1", "eval.every=0", "logging.progress=false", "logging.tensorboard=false",
            "diagnostics.law_refit_every=0", "diagnostics.measure_delta_h=false", f"logging.run_dir={run_dir}"]


class Files:
    """The inputs of the battery, written once per test into ``root``."""

    def __init__(self, root: Path):
        self.root = root
        w = self.write
        self.rewards = {name: root / name for name in REWARDS}
        for name, text in REWARDS.items():
            if text is not None:
                w(name, text)
        (root / "latin1.py").write_bytes(b"# caf\xe9\ndef fn(c, e):\n    return 1.0\n")
        w("section_scalar.yaml", "optim: 5\n")
        w("bad.yaml", "optim:\n  lr: [1e-5\n  steps: 2\n")
        w("list.yaml", "- optim\n- data\n")
        w("intkey.yaml", "1: x\n")
        (root / "latin1.yaml").write_bytes(b"# caf\xe9\noptim: {steps: 2}\n")
        w("a_file", "not a directory\n")
        rows = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(40)]
        w("good.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        w("few.jsonl", "".join(json.dumps(r) + "\n" for r in rows[:3]))
        w("badline.jsonl", json.dumps(rows[0]) + "\n{not json}\n" + json.dumps(rows[1]) + "\n")
        w("scalarline.jsonl", json.dumps(rows[0]) + "\n42\n")
        w("pretty.jsonl", json.dumps(rows[:2], indent=2) + "\n")
        w("scalar.json", "42\n")
        w("nocol.jsonl", "".join(json.dumps({"question": r["prompt"], "answer": r["answer"]}) + "\n" for r in rows))
        w("empty.jsonl", "")
        w("long.jsonl", "".join(json.dumps({"prompt": "x" * 1200 + f" {i}", "answer": "1"}) + "\n" for i in range(40)))
        w("d.txt", "hello\n")
        (root / "latin1.jsonl").write_bytes(json.dumps(rows[0]).encode() + b"\n" + BAD_UTF8)
        (root / "latin1.csv").write_bytes(b"prompt,answer\ncaf\xe9,1\n")
        (root / "existing_run").mkdir()
        w("existing_run/metrics.jsonl", '{"step": 0}\n')
        # analysis inputs
        for name, text in (("run_badline", '{"step": 0, "entropy/mean": 1.0}\nnope\n{"step": 1}\n'),
                           ("run_list", '{"step": 0}\n[1, 2]\n{"step": 1}\n'),
                           ("run_nostep", '{"loss": 1.0}\n'),
                           ("run_ok", '{"step": 0, "entropy/mean": 1.0, "reward/accuracy": 0.1}\n'
                                      '{"step": 1, "entropy/mean": 0.9, "reward/accuracy": 0.2}\n')):
            (root / name).mkdir()
            w(f"{name}/metrics.jsonl", text)
        (root / "run_latin1").mkdir()
        (root / "run_latin1" / "metrics.jsonl").write_bytes(b'{"step": 0}\n' + BAD_UTF8)
        (root / "run_badconfig").mkdir()
        w("run_badconfig/metrics.jsonl", '{"step": 0, "entropy/mean": 1.0}\n')
        (root / "run_badconfig" / "config.yaml").write_bytes(b"algorithm: {method: caf\xe9}\n")
        (root / "no_metrics").mkdir()
        # evaluate inputs
        w("eval_badline.jsonl", '{"question": "1+1?", "answer": "2"}\n{oops\n')
        w("eval_scalar.jsonl", '{"question": "1+1?", "answer": "2"}\n"just a string"\n')
        w("eval_nokeys.jsonl", '{"q": "1+1?", "a": "2"}\n')
        w("eval_emptyq.jsonl", '{"question": "  ", "answer": "2"}\n')
        w("eval_empty.jsonl", "\n\n")
        (root / "eval_latin1.jsonl").write_bytes(b'{"question": "caf\xe9?", "answer": "2"}\n')

    def write(self, name: str, text: str) -> Path:
        p = self.root / name
        p.write_text(text, encoding="utf-8")
        return p

    def __getattr__(self, name: str) -> str:  # f.good_jsonl → str(root / "good.jsonl")
        stem, _, ext = name.rpartition("_")
        return str(self.root / f"{stem}.{ext}")

    def train(self, *overrides: str, config: str | None = None, run: str = "run") -> list[str]:
        argv = ["train"] + (["--config", config] if config else [])
        return argv + _tiny(self.root / run) + list(overrides)


# (case id, argv from the inputs, a regex the one-line message must match: the field or the file)
Case = tuple[str, Callable[[Files], list[str]], str]

CONFIG: list[Case] = [
    ("lr_inf", lambda f: f.train("optim.lr=inf"), r"optim\.lr = inf is not a finite number; allowed: \(0, 1\]"),
    ("lr_nan", lambda f: f.train("optim.lr=nan"), r"optim\.lr = nan"),
    ("lr_zero", lambda f: f.train("optim.lr=0"), r"optim\.lr = 0\.0 is out of range"),
    ("lr_negative", lambda f: f.train("optim.lr=-1e-5"), r"optim\.lr = -1e-05"),
    ("lr_huge", lambda f: f.train("optim.lr=5"), r"optim\.lr = 5\.0 is out of range; allowed: \(0, 1\]"),
    ("lr_text", lambda f: f.train("optim.lr=fast"), r"optim\.lr = 'fast' has the wrong type; expected a number"),
    ("seed_negative", lambda f: f.train("seed=-1"), r"seed = -1 is out of range; allowed: \[0, 4294967295\]"),
    ("seed_float", lambda f: f.train("seed=1.5"), r"seed = 1\.5 has the wrong type; expected an integer"),
    ("seed_huge", lambda f: f.train("seed=99999999999"), r"seed = 99999999999 is out of range"),
    ("weight_decay_negative", lambda f: f.train("optim.weight_decay=-1"), r"optim\.weight_decay = -1\.0"),
    ("weight_decay_nan", lambda f: f.train("optim.weight_decay=nan"), r"optim\.weight_decay = nan"),
    ("format_reward_negative", lambda f: f.train("data.format_reward=-1"), r"data\.format_reward = -1\.0"),
    ("grad_clip_nan", lambda f: f.train("optim.grad_clip=nan", "optim.lr=0.5"), r"optim\.grad_clip = nan"),
    ("grad_clip_negative", lambda f: f.train("optim.grad_clip=-1"), r"optim\.grad_clip = -1\.0"),
    ("n_zero", lambda f: f.train("rollout.n=0"), r"rollout\.n = 0 is out of range"),
    ("n_one_group_relative", lambda f: f.train("rollout.n=1"), r"rollout\.n = 1 .*group-relative"),
    ("temperature_zero", lambda f: f.train("rollout.temperature=0"), r"rollout\.temperature = 0\.0"),
    ("top_p_above_one", lambda f: f.train("rollout.top_p=1.5"), r"rollout\.top_p = 1\.5 .*\(0, 1\]"),
    ("max_new_tokens_zero", lambda f: f.train("rollout.max_new_tokens=0"), r"rollout\.max_new_tokens = 0"),
    ("steps_zero", lambda f: f.train("optim.steps=0"), r"optim\.steps = 0"),
    ("schedule_unknown", lambda f: f.train("optim.schedule=step"), r"optim\.schedule = 'step' .*constant"),
    ("dtype_unknown", lambda f: f.train("model.dtype=int8"), r"model\.dtype = 'int8' .*float32"),
    ("task_unknown", lambda f: f.train("data.task=algebra"), r"data\.task = 'algebra' .*arithmetic"),
    ("heldout_negative", lambda f: f.train("data.heldout_size=-3"), r"data\.heldout_size = -3"),
    ("eval_k_above_n", lambda f: f.train("eval.k=5"), r"eval\.k \(5\) must be <= eval\.n_samples"),
    ("unknown_key", lambda f: f.train("optim.lrr=1e-5"), r"unknown config key optim\.lrr"),
    ("empty_key", lambda f: f.train("=5"), r"override '=5' has an empty key part"),
    ("empty_key_part", lambda f: f.train("optim.=3"), r"override 'optim\.=3' has an empty key part"),
    ("section_scalar_with_override", lambda f: f.train("optim.lr=1e-5", config=f.section_scalar_yaml),
     r"optim = 5 is not a mapping, but optim\.steps, .* are set too"),
    ("section_scalar", lambda f: ["train", "--config", f.section_scalar_yaml], r"optim: expected a mapping"),
    ("override_section_scalar", lambda f: ["train", "optim=5"], r"optim: expected a mapping"),
    ("override_value_and_subkeys", lambda f: f.train("optim=5"),
     r"override optim: optim is given a value and sub-keys"),
    ("config_missing", lambda f: f.train(config=str(f.root / "nope.yaml")), r"nope\.yaml: no such config file"),
    ("config_is_dir", lambda f: f.train(config=str(f.root)), r"is a directory, expected a config file"),
    ("config_not_utf8", lambda f: f.train(config=f.latin1_yaml), r"latin1\.yaml line 1: not UTF-8"),
    ("config_bad_yaml", lambda f: f.train(config=f.bad_yaml), r"bad\.yaml line \d+: not valid YAML"),
    ("config_list", lambda f: f.train(config=f.list_yaml), r"list\.yaml: expected a mapping of sections"),
    ("config_int_key", lambda f: f.train(config=f.intkey_yaml), r"unknown config key 1"),
    ("run_dir_under_file", lambda f: f.train(f"logging.run_dir={f.root}/a_file/run"),
     r"logging\.run_dir = .*a_file/run' is under .*a_file, which is a file"),
    ("run_dir_is_file", lambda f: f.train(f"logging.run_dir={f.root}/a_file"), r"logging\.run_dir = .* is a file"),
    ("run_dir_existing_run", lambda f: f.train(f"logging.run_dir={f.root}/existing_run"),
     r"logging\.run_dir = .*existing_run' already holds files .*--resume .*--overwrite"),
    ("method_unknown", lambda f: f.train("algorithm.method=grpoo"), r"unknown method 'grpoo'"),
    ("method_override_range", lambda f: f.train("algorithm.method=clip_cov", "algorithm.overrides.clip.ratio=2"),
     r"algorithm\.overrides\.clip\.ratio = 2"),
    ("model_missing", lambda f: f.train("model.name=/no/such/model"), r"model\.name = '/no/such/model': no such"),
    ("expert_missing", lambda f: f.train("model.expert=/no/such/expert"), r"model\.expert = '/no/such/expert'"),
    ("reward_source_unknown", lambda f: f.train("data.reward_source=oracle"), r"data\.reward_source = 'oracle'"),
    ("reward_limit_zero", lambda f: f.train("data.reward_limit_s=0"), r"data\.reward_limit_s = 0\.0"),
    ("reward_memory_small", lambda f: f.train("data.reward_memory_mb=10"), r"data\.reward_memory_mb = 10"),
    ("keep_last_zero", lambda f: f.train("checkpoint.keep_last=0"), r"checkpoint\.keep_last = 0"),
    ("difficulty_zero", lambda f: f.train("data.difficulty=0"), r"data\.difficulty = 0"),
    ("difficulty_unknown_level", lambda f: f.train("data.difficulty=42"), r"data\.task = 'arithmetic': .*difficulty"),
    ("bool_not_bool", lambda f: f.train("logging.progress=maybe"), r"logging\.progress = 'maybe' .*true or false"),
    ("lora_targets_empty", lambda f: f.train("model.lora_targets=[]"), r"model\.lora_targets = \[\] is empty"),
    ("max_nonfinite_zero", lambda f: f.train("optim.max_nonfinite_steps=0"), r"optim\.max_nonfinite_steps = 0"),
]

DATA: list[Case] = [
    ("file_without_path", lambda f: f.train("data.task=file"), r"data\.path is required"),
    ("path_missing", lambda f: f.train("data.task=file", f"data.path={f.root}/nope.jsonl"),
     r"data\.path = .*nope\.jsonl': no such file"),
    ("jsonl_not_utf8", lambda f: f.train("data.task=file", f"data.path={f.latin1_jsonl}"),
     r"latin1\.jsonl line 2: not UTF-8 text \(byte 0xe9\)"),
    ("jsonl_bad_line", lambda f: f.train("data.task=file", f"data.path={f.badline_jsonl}"),
     r"badline\.jsonl line 2: not valid JSON"),
    ("jsonl_scalar_line", lambda f: f.train("data.task=file", f"data.path={f.scalarline_jsonl}"),
     r"scalarline\.jsonl line 2: a JSON number, expected a JSON object per line"),
    ("jsonl_one_document", lambda f: f.train("data.task=file", f"data.path={f.pretty_jsonl}"),
     r"pretty\.jsonl line 1: not valid JSON.*end in \.json"),
    ("json_bare_scalar", lambda f: f.train("data.task=file", f"data.path={f.scalar_json}"),
     r"^entrolab: error: \S*scalar\.json: expected a JSON list of objects .*got a JSON number"),
    ("missing_column", lambda f: f.train("data.task=file", f"data.path={f.nocol_jsonl}"),
     r"nocol\.jsonl: column 'prompt' \(prompt_key\) not found"),
    ("empty_file", lambda f: f.train("data.task=file", f"data.path={f.empty_jsonl}"),
     r"^entrolab: error: \S*empty\.jsonl contains no rows"),
    ("csv_not_utf8", lambda f: f.train("data.task=file", f"data.path={f.latin1_csv}"),
     r"latin1\.csv line 2: not UTF-8"),
    ("unsupported_format", lambda f: f.train("data.task=file", f"data.path={f.d_txt}"),
     r"unsupported dataset format '\.txt'"),
    ("empty_prompt_key", lambda f: f.train("data.task=file", f"data.path={f.good_jsonl}", "data.prompt_key="),
     r"data\.prompt_key is empty"),
    ("empty_heldout_with_eval", lambda f: f.train("data.task=file", f"data.path={f.few_jsonl}", "eval.every=1",
                                                  "eval.size=1"),
     r"data\.path = .*few\.jsonl' has an empty held-out split, but eval\.every = 1"),
    ("prompt_longer_than_context", lambda f: f.train("data.task=file", f"data.path={f.long_jsonl}",
                                                     "rollout.max_new_tokens=8"),
     r"prompt 'long-\d+' is 1\d{3} tokens .*context is 1024 tokens"),
    ("difficulty_on_file_task", lambda f: f.train("data.task=file", f"data.path={f.good_jsonl}", "data.difficulty=2"),
     r"data\.difficulty does not apply to task 'file'"),
]

REWARD: list[Case] = [
    ("spec_without_colon", lambda f: f.train("data.reward_fn=my_rewards"), r"data\.reward_fn = 'my_rewards' must look"),
    ("module_missing", lambda f: f.train("data.reward_fn=no_such_module_xyz:fn"),
     r"data\.reward_fn = 'no_such_module_xyz:fn': no module named"),
    ("file_missing", lambda f: f.train(f"data.reward_fn={f.root}/missing.py:fn"), r"missing\.py does not exist"),
    ("syntax_error", lambda f: f.train(f"data.reward_fn={f.syntax_py}:fn"), r"syntax\.py line 1: syntax error"),
    ("function_missing", lambda f: f.train(f"data.reward_fn={f.ok_py}:nope"),
     r"data\.reward_fn = .*ok\.py:nope': .*has no function 'nope'; it defines: fn"),
    ("not_callable", lambda f: f.train(f"data.reward_fn={f.ok_py}:NOT_CALLABLE"), r"data\.reward_fn = .* not callable"),
    ("raises_at_import", lambda f: f.train(f"data.reward_fn={f.raises_py}:fn"),
     r"data\.reward_fn = .*raises\.py:fn': importing .*raises\.py raised ZeroDivisionError"),
    ("module_not_utf8", lambda f: f.train(f"data.reward_fn={f.latin1_py}:fn"), r"latin1\.py line 1: not UTF-8"),
]

ANALYSIS: list[Case] = [
    ("analyze_missing", lambda f: ["analyze", str(f.root / "nope")], r"run directory .*nope' does not exist"),
    ("analyze_file", lambda f: ["analyze", str(f.root / "a_file")], r"a_file' is not a directory"),
    ("analyze_no_metrics", lambda f: ["analyze", str(f.root / "no_metrics")], r"no_metrics' has no metrics\.jsonl"),
    ("analyze_bad_line", lambda f: ["analyze", str(f.root / "run_badline")],
     r"run_badline/metrics\.jsonl line 2: not valid JSON"),
    ("analyze_list_line", lambda f: ["analyze", str(f.root / "run_list")],
     r"run_list/metrics\.jsonl line 2: a JSON list, expected a JSON object per line"),
    ("analyze_no_step", lambda f: ["analyze", str(f.root / "run_nostep")], r"metrics\.jsonl: record 1 has no numeric"),
    ("analyze_not_utf8", lambda f: ["analyze", str(f.root / "run_latin1")],
     r"run_latin1/metrics\.jsonl line 2: not UTF-8"),
    ("analyze_config_not_utf8", lambda f: ["analyze", str(f.root / "run_badconfig")],
     r"run_badconfig/config\.yaml line 1: not UTF-8"),
    ("analyze_out_is_file", lambda f: ["analyze", str(f.root / "run_ok"), "--out", str(f.root / "a_file")],
     r"--out = .*a_file' is a file"),
    ("analyze_fit_fraction", lambda f: ["analyze", str(f.root / "run_ok"), "--fit-fraction", "2"],
     r"--fit-fraction must be in \(0, 1\)"),
    ("compare_one_unreadable", lambda f: ["compare", str(f.root / "run_ok"), str(f.root / "run_latin1")],
     r"run_latin1/metrics\.jsonl line 2: not UTF-8"),
    ("compare_one_missing", lambda f: ["compare", str(f.root / "run_ok"), str(f.root / "nope")],
     r"nope' does not exist"),
]

INFERENCE: list[Case] = [
    ("infer_empty_question", lambda f: ["infer", "--model", "tiny", ""], r"infer: the question is empty"),
    ("infer_blank_question", lambda f: ["infer", "--model", "tiny", "   "], r"infer: the question is empty"),
    ("infer_unknown_strategy", lambda f: ["infer", "--model", "tiny", "--strategy", "magic", "1+1?"],
     r"unknown strategy 'magic'"),
    ("infer_bad_param", lambda f: ["infer", "--model", "tiny", "--param", "delta", "1+1?"],
     r"--param expects KEY=VALUE"),
    ("infer_model_missing", lambda f: ["infer", "--model", str(f.root / "nope"), "1+1?"], r"--model .*nope'"),
    ("evaluate_missing", lambda f: ["evaluate", "--model", "tiny", "--data", str(f.root / "nope.jsonl")],
     r"--data .*nope\.jsonl': no such file"),
    ("evaluate_not_utf8", lambda f: ["evaluate", "--model", "tiny", "--data", f.eval_latin1_jsonl],
     r"eval_latin1\.jsonl line 1: not UTF-8"),
    ("evaluate_bad_line", lambda f: ["evaluate", "--model", "tiny", "--data", f.eval_badline_jsonl],
     r"eval_badline\.jsonl line 2: not valid JSON"),
    ("evaluate_scalar_line", lambda f: ["evaluate", "--model", "tiny", "--data", f.eval_scalar_jsonl],
     r"eval_scalar\.jsonl line 2: a JSON string, expected a JSON object per line"),
    ("evaluate_missing_keys", lambda f: ["evaluate", "--model", "tiny", "--data", f.eval_nokeys_jsonl],
     r"eval_nokeys\.jsonl line 1: needs 'question'"),
    ("evaluate_blank_question", lambda f: ["evaluate", "--model", "tiny", "--data", f.eval_emptyq_jsonl],
     r"eval_emptyq\.jsonl line 1: needs 'question'.*not empty"),
    ("evaluate_empty", lambda f: ["evaluate", "--model", "tiny", "--data", f.eval_empty_jsonl], r"has no rows"),
    ("evaluate_limit_zero", lambda f: ["evaluate", "--model", "tiny", "--data", "arithmetic", "--limit", "0"],
     r"--limit must be ≥ 1"),
    ("evaluate_out_is_file", lambda f: ["evaluate", "--model", "tiny", "--data", "arithmetic", "--limit", "1",
                                        "--out", str(f.root / "a_file")], r"--out = .*a_file' is a file"),
]


def _check(capsys, argv: list[str], pattern: str) -> str:
    rc = main(argv)  # an exception escaping here is a traceback: the test fails with it
    captured = capsys.readouterr()
    lines = [x for x in captured.err.splitlines() if x.startswith("entrolab: error:")]
    assert rc != 0, f"exit 0 for a bad input: {argv}\nstdout: {captured.out[-500:]}"
    assert len(lines) == 1, f"expected one 'entrolab: error:' line, got: {captured.err!r}"
    assert "Traceback" not in captured.err
    assert re.search(pattern, lines[0]), f"message does not name the field or file ({pattern!r}): {lines[0]}"
    return lines[0]


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return Files(tmp_path)


ALL = CONFIG + DATA + REWARD + ANALYSIS + INFERENCE


@pytest.mark.parametrize("case_id,argv,pattern", ALL, ids=[c[0] for c in ALL])
def test_bad_input_is_one_clear_error(case_id, argv, pattern, files, capsys):
    _check(capsys, argv(files), pattern)


# ------------------------------------------------------------------------------------------------------ resume
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished two-step tiny run with checkpoints at steps 1 and 2 (copied by each resume case)."""
    root = tmp_path_factory.mktemp("trained")
    rc = main(["train"] + _tiny(root / "run") + ["optim.steps=2", "checkpoint.every=1", "checkpoint.keep_last=2",
                                                 f"data.reward_fn={_reward_file(root)}:fn"])
    assert rc == 0
    return root / "run"


def _reward_file(root: Path) -> Path:
    p = root / "letters.py"
    p.write_text("def fn(completion, example):\n    return completion.count('a') / max(1, len(completion))\n")
    return p


def _damage(run: Path, how: str) -> None:
    ckpts = sorted((run / "checkpoints").iterdir())
    for ck in ckpts:  # the battery damages every checkpoint: nothing to fall back to
        if how == "truncate":
            with open(ck / "model.safetensors", "r+b") as fh:
                fh.truncate(1000)
        elif how == "garbage":
            (ck / "trainer_state.pt").write_bytes(b"garbage" * 100)
        elif how == "delete":
            (ck / "trainer_state.pt").unlink()
        elif how == "manifest":
            (ck / "manifest.json").unlink()


def _edit_config(run: Path, **sections) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for k, v in sections.items():
        cfg[k].update(v)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda r: (r / name).write_bytes(data)


def _remove(name: str) -> Callable[[Path], None]:
    return lambda r: shutil.rmtree(r / name) if (r / name).is_dir() else (r / name).unlink()


def _nothing(run: Path) -> None:
    pass


# (case id, what is done to a copy of the trained run, the arguments after `train --resume RUN`, the message regex)
RESUME: list[tuple[str, Callable[[Path], None], list[str], str]] = [
    ("missing_dir", lambda r: shutil.rmtree(r), [], r"--resume .*run: no such run directory"),
    ("no_config", _remove("config.yaml"), [], r"--resume .*: no config\.yaml there"),
    ("no_checkpoint", _remove("checkpoints"), [], r"--resume .*: no checkpoint to resume from .*nothing was changed"),
    ("truncated_weights", lambda r: _damage(r, "truncate"), [],
     r"no intact checkpoint \(step_000002 is damaged: model\.safetensors: size mismatch"),
    ("garbage_state", lambda r: _damage(r, "garbage"), [], r"step_000002 is damaged: trainer_state\.pt: size mismatch"),
    ("deleted_file", lambda r: _damage(r, "delete"), [], r"step_000002 is damaged: trainer_state\.pt: missing"),
    ("deleted_manifest", lambda r: _damage(r, "manifest"), [], r"step_000002 is damaged: manifest\.json: missing"),
    ("edited_method", lambda r: _edit_config(r, algorithm={"method": "clip_cov"}), [],
     r"the config differs .*objective\.clip\.name: ppo → clip_cov"),
    ("edited_model", lambda r: _edit_config(r, model={"lora_rank": 2}), [],
     r"the config differs .*model\.lora_rank: 0 → 2"),
    ("edited_shape", lambda r: _edit_config(r, rollout={"n": 3}), [], r"the config differs .*rollout\.n: 2 → 3"),
    ("unsafe_override", _nothing, ["optim.lr=0.5"], r"optim\.lr: 2e-06 → 0\.5"),
    ("config_not_utf8", _write("config.yaml", b"seed: caf\xe9\n"), [], r"config\.yaml line 1: not UTF-8"),
    ("config_bad_yaml", _write("config.yaml", b"optim: [\n"), [], r"config\.yaml line \d+: not valid YAML"),
    ("with_config", _nothing, ["--config", "x.yaml"], r"--resume takes the run's own"),
    ("bad_override_value", _nothing, ["optim.steps=0"], r"optim\.steps = 0"),
]


@pytest.mark.parametrize("case_id,prepare,extra,pattern", RESUME, ids=[c[0] for c in RESUME])
def test_bad_resume_is_one_clear_error_and_changes_nothing(case_id, prepare, extra, pattern, trained_run, tmp_path,
                                                           capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    prepare(run)
    before = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()} if run.exists() else {}
    _check(capsys, ["train", "--resume", str(run)] + extra, pattern)
    after = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()} if run.exists() else {}
    assert after == before  # a refused resume changes nothing: no metrics dropped, no checkpoint removed


def test_the_battery_is_large():
    assert len(ALL) + len(RESUME) >= 60


# ------------------------------------------------------------------------------------------------------ the checks
def test_every_config_field_declares_its_check_and_a_new_one_cannot_skip_it():
    import dataclasses
    import typing
    from dataclasses import dataclass

    from entrolab.train.checks import checked, field_check, setting
    from entrolab.train.config import TrainConfig

    for section in dataclasses.fields(TrainConfig):
        cls = section.type if isinstance(section.type, type) else typing.get_type_hints(TrainConfig)[section.name]
        if not dataclasses.is_dataclass(cls):
            assert field_check(section) is not None  # seed
            continue
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert hints[f.name] is bool or field_check(f) is not None, f"{section.name}.{f.name} has no check"
    with pytest.raises(TypeError, match="config field Extra.size declares no check"):
        checked(dataclass(type("Extra", (), {"__annotations__": {"size": int}, "size": 3})))
    with pytest.raises(TypeError, match="config field Extra.rate is a number without a range"):
        checked(dataclass(type("Extra", (), {"__annotations__": {"rate": float}, "rate": setting(0.5, text=True)})))


def test_a_config_built_in_python_is_checked_like_a_yaml_one():
    from entrolab.errors import ConfigError
    from entrolab.train.config import OptimConfig, TrainConfig

    with pytest.raises(ConfigError, match=r"optim\.lr = inf is not a finite number"):
        TrainConfig(optim=OptimConfig(lr=float("inf"))).validate()
    with pytest.raises(ConfigError, match=r"optim\.steps = '3' has the wrong type; expected an integer"):
        TrainConfig(optim=OptimConfig(steps="3")).validate()
    cfg = TrainConfig(optim=OptimConfig(weight_decay=1)).validate()
    assert isinstance(cfg.optim.weight_decay, float)  # ints become floats for float fields


def test_yaml_numbers_written_as_strings_are_read_as_numbers(tmp_path):
    from entrolab.train.config import load_config

    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1e-5\n")  # YAML 1.1 reads 1e-5 (no dot) as a string
    assert load_config(tmp_path / "c.yaml").optim.lr == 1e-5


def test_a_slot_named_by_its_component_keeps_it_when_an_override_sets_a_parameter(tmp_path):
    from entrolab.train.config import load_config

    (tmp_path / "c.yaml").write_text("algorithm:\n  method: grpo\n  overrides: {kl: ref_kl}\n")
    cfg = load_config(tmp_path / "c.yaml", ["algorithm.overrides.kl.coef=0.5"])
    assert cfg.algorithm.spec().slots["kl"].name == "ref_kl" and cfg.algorithm.objective().kl.coef == 0.5


def test_every_advantage_estimator_gives_a_group_of_one_nothing():
    """What ``groupwise`` claims, and ``rollout.n = 1`` is refused for: one response per prompt, every advantage 0 —
    checked on every groupwise estimator that computes on a plain batch with the engine's extras."""
    import sys
    import warnings

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from batches import make_batch

    from entrolab.knobs.advantage import ADVANTAGES

    B, T = 4, 5
    extras = {"correct": torch.tensor([False, True, True, True]), "answer_cluster": torch.arange(B),
              "self_certainty": torch.rand(B, T), "step_id": torch.zeros(B, T, dtype=torch.long),
              "prompt_id": torch.arange(B), "phase": torch.zeros(B, T, dtype=torch.long),
              "sampled_logit": torch.rand(B, T)}
    checked, needs_strategy = [], []
    for name in ADVANTAGES.names():
        est = ADVANTAGES.build(name)
        if not est.groupwise:
            continue  # a learned or batch-wide baseline (GAE, ReMax, REINFORCE++): one response per prompt is fine
        batch = make_batch([3, 4, 2, 5], rewards=[0.0, 1.0, 0.5, 1.0], group_ids=[0, 1, 2, 3],
                           old_entropy=torch.rand(B, T), extras=dict(extras))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                adv = est.compute(batch)
        except Exception as e:  # noqa: BLE001
            # only what a sampling strategy's rows, or the component's own rollout_extras, would carry is missing
            assert "sampling strategy" in str(e) or "rollout_extras" in str(e), (name, e)
            needs_strategy.append(name)
            continue
        assert float(adv.abs().max()) == 0.0, name
        checked.append(name)
    assert len(checked) >= 22 and len(needs_strategy) <= 6, (checked, needs_strategy)


def test_n_1_is_allowed_where_the_sampling_strategy_forms_its_own_groups():
    from entrolab.train.config import config_from_dict

    cfg = config_from_dict({"rollout": {"n": 1}, "algorithm": {"method": "treerl"}})
    assert cfg.algorithm.spec().group_relative() is False


# ------------------------------------------------------------------------------------------------------ silent wrongs
def test_a_run_without_learning_signal_says_so_live_and_in_the_log(tmp_path, capsys, monkeypatch):
    """The tiny random model never answers arithmetic: reward 0 for every response, at every step."""
    monkeypatch.chdir(tmp_path)
    args = _tiny(tmp_path / "run") + ["optim.steps=3", "diagnostics.no_signal_steps=2", "logging.progress=true"]
    assert main(["train"] + args) == 0
    captured = capsys.readouterr()
    warning = [x for x in captured.err.splitlines() if "warning" in x]
    assert len(warning) == 1 and "step 1: every group has had identical rewards for 2 steps" in warning[0]
    assert "answers are not in the form the verifier reads" in warning[0]
    live = [x for x in captured.out.splitlines() if x.startswith("[grpo] step")]
    assert "NO SIGNAL (1 step)" in live[0] and "NO SIGNAL (3 steps)" in live[2]
    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["update/no_signal_streak"] for r in log] == [1.0, 2.0, 3.0]


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    import torch

    from entrolab.errors import TrainingError
    from entrolab.train.checkpoint import list_checkpoints, save_checkpoint

    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path, 1, model, {"step": 1}, keep_last=2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(TrainingError, match=r"not saving checkpoint step_000002: 1 weight tensor\(s\) are not finite "
                                            r"\(model:weight\)"):
        save_checkpoint(tmp_path, 2, model, {"step": 2}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000001"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_a_checkpoint_manifest_lists_every_file_with_size_and_checksum(tmp_path):
    import hashlib

    import torch

    from entrolab.train.checkpoint import save_checkpoint, verify_checkpoint

    path = save_checkpoint(tmp_path, 3, torch.nn.Linear(3, 2), {"step": 3}, keep_last=2, run={"fingerprint": "x"})
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["step"] == 3 and manifest["run"] == {"fingerprint": "x"}
    assert set(manifest["files"]) == {"model.safetensors", "trainer_state.pt"}
    for name, entry in manifest["files"].items():
        data = (path / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert verify_checkpoint(path) is None


def test_the_default_run_directory_is_never_shared(tmp_path, monkeypatch):
    from entrolab.train.rundir import default_run_dir

    monkeypatch.chdir(tmp_path)
    first = default_run_dir("grpo")
    first.mkdir(parents=True)
    second = default_run_dir("grpo")
    assert second != first and second.name.startswith(first.name)
