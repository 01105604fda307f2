"""The sampling knob's prompt curricula: SENT's semantic-entropy curriculum (arXiv 2512.04359).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from ...env.equivalence import cluster_answers
from ...env.rewards import extract_answer
from ...env.tasks import Example
from ...errors import ConfigError
from ...ops.semantic import semantic_entropy
from ...registry import check_range
from .base import SAMPLINGS, SamplingStrategy

if TYPE_CHECKING:
    from ...generation.engine import RolloutEngine


# -------------------------------------------------------------------------------------------------------- SENT
@SAMPLINGS.register("semantic_entropy_curriculum")
@dataclass
class SemanticEntropyCurriculum(SamplingStrategy):
    """The semantic-entropy curriculum of SENT (Cao et al., arXiv 2512.04359): train on prompts from low to high
    semantic entropy, in stages.

    Prompts are drawn from the training stream in pools of ``pool_size``; each prompt's semantic entropy
    SE = −Σ_C p(C) log p(C) (arXiv 2302.09664, discrete form p(C) = |C|/M) is estimated from M = ``samples``
    answers sampled at the rollout temperature, clustered by answer equivalence (``equivalence``: math, exact). The
    pool is sorted by SE (ascending, stable) and split into ``stages`` equal stages served in order: stage 1 (lowest
    SE) first. Served prompts are then sampled as usual. The queue is checkpointed. SENT's formulas and pool sizes
    were not recovered (abstract, README and script names only): pool-wise ordering and M = 4 are readings.
    """

    pool_size: int = 64
    """Prompts drawn from the stream per pool, which is sorted by semantic entropy and split into stages."""
    stages: int = 2
    """Number of equal stages a sorted pool is split into, served lowest semantic entropy first."""
    samples: int = 4
    """M: answers sampled per prompt to estimate its semantic entropy (a reading: 4)."""
    equivalence: str = "math"
    """How the M answers are clustered: 'math' (math-verify) or 'exact'."""
    queue: list = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        check_range("semantic_entropy_curriculum", "pool_size", self.pool_size, lo=1)
        check_range("semantic_entropy_curriculum", "stages", self.stages, lo=1)
        check_range("semantic_entropy_curriculum", "samples", self.samples, lo=1)
        if self.equivalence not in ("math", "exact"):
            raise ConfigError(f"semantic_entropy_curriculum.equivalence = {self.equivalence!r}; choose math or exact")
        self._served: list[dict] = []

    def semantic_entropies(self, engine: "RolloutEngine", examples: list) -> list[float]:
        gen = engine.generate([engine.format(ex) for ex in examples], self.samples)
        answers = [extract_answer(t) for t in engine.decode(gen)]
        out = []
        for i in range(len(examples)):
            ans = answers[i * self.samples:(i + 1) * self.samples]
            out.append(semantic_entropy(cluster_answers(ans, self.equivalence), form="count"))
        return out

    def select_examples(self, engine: "RolloutEngine", count: int) -> list:
        while len(self.queue) < count:
            pool = engine.next_examples(max(self.pool_size, count - len(self.queue)))
            se = self.semantic_entropies(engine, pool)
            order = sorted(range(len(pool)), key=lambda i: (se[i], i))
            per = math.ceil(len(pool) / self.stages)
            self.queue += [{"example": dataclasses.asdict(pool[i]), "se": se[i], "stage": rank // per + 1}
                           for rank, i in enumerate(order)]
        self._served, self.queue = self.queue[:count], self.queue[count:]

        return [Example(**item["example"]) for item in self._served]

    def rollout(self, engine: "RolloutEngine", prompts: list[str], examples: list, n: int) -> Any:
        gen = engine.generate(prompts, n)
        if self._served:
            gen.metrics = {"sampling/curriculum_stage": float(max(s["stage"] for s in self._served)),
                           "sampling/semantic_entropy": sum(s["se"] for s in self._served) / len(self._served)}
        return gen

    def state_dict(self) -> dict[str, Any]:
        return {"queue": [dict(item) for item in self.queue]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = sorted(set(state) - {"queue"})
        if unknown:
            raise ConfigError(f"semantic_entropy_curriculum state has unknown entries {unknown}")
        self.queue = [dict(item) for item in state.get("queue", [])]
