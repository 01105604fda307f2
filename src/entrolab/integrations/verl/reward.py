"""entrolab's verifiable reward as a verl custom reward function:

    reward.custom_reward_function.path=pkg://entrolab.integrations.verl.reward
    reward.custom_reward_function.name=compute_score

``compute_score(data_source, solution_str, ground_truth, extra_info=None)`` extracts the response's final answer
(``\\boxed{}``, else the last number, linear-time and length-capped: ``env/rewards.py``) and checks it against the
ground truth with math-verify when it is installed (plain integers exactly, without it). It returns
``{"score": 1.0 | 0.0, "acc": bool}``; verl logs ``acc`` as ``val-core/<data_source>/acc/mean@k``, which
``entrolab analyze`` reads as ``eval/accuracy``. No model code, no verl import."""

from __future__ import annotations

from typing import Any, Optional

from ...env.rewards import extract_answer, verify_math


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Optional[dict] = None,
                  **_: Any) -> dict[str, Any]:
    """1.0 when the response's final answer equals ``ground_truth`` (math-verify), else 0.0."""
    pred = extract_answer(solution_str or "")
    ok = bool(pred is not None and verify_math(pred, ground_truth))
    return {"score": 1.0 if ok else 0.0, "acc": ok}
