"""Answer clustering: math equivalence, embedding similarity (with the real packaged model), judge callables."""

from __future__ import annotations

import pytest
import torch

from entrolab.env.equivalence import cluster_answers, math_equivalent


def test_math_equivalence_of_fraction_forms():
    assert cluster_answers(["1/2", "0.5", "\\frac{1}{2}"], mode="math") == [0, 0, 0]
    assert math_equivalent("1/2", "0.5") and math_equivalent("\\frac{1}{2}", "0.5")
    assert math_equivalent("\\dfrac12", "1/2")
    assert not math_equivalent("1/2", "1/3")
    ids = cluster_answers(["1/2", "3", "0.50", "x+1", "1+x", "\\frac{1}{2}", "3.0", None, "", "7"], mode="math")
    assert ids == [0, 1, 0, 2, 2, 0, 1, 3, 3, 4]


def test_worded_answers_compare_as_strings_in_math_mode():
    ids = cluster_answers(["the Eiffel Tower", "the  eiffel tower", "Big Ben", "\\text{Big Ben}"], mode="math")
    assert ids == [0, 0, 1, 1]
    # math-verify alone reads words as products of symbols ("tea" = t·e·a = "eat"); words are compared as strings
    assert not math_equivalent("tea", "eat") and not math_equivalent("Big Ben", "Ben Big")
    assert math_equivalent("x y", "y x") and math_equivalent("\\sqrt{2}", "2^{1/2}")


def test_exact_and_judge_modes():
    assert cluster_answers(["a", "b", " a ", "b"], mode="exact") == [0, 1, 0, 1]
    calls = []

    def entails(a, b):  # one-directional: "ab" entails "a", "a" does not entail "ab"
        calls.append((a, b))
        return a.startswith(b)

    assert cluster_answers(["a", "ab", "a"], mode="judge", judge=entails) == [0, 1, 0]  # bidirectional: apart
    assert ("ab", "a") in calls and ("a", "ab") in calls
    assert cluster_answers(["a", "ab"], mode="judge", judge=entails, bidirectional=False) == [0, 0]
    with pytest.raises(ValueError):
        cluster_answers(["a"], mode="judge")
    with pytest.raises(ValueError, match="valid modes"):
        cluster_answers(["a"], mode="nli")


def test_embedding_mode_with_a_custom_embedder():
    table = {"cat": [1.0, 0.0], "kitten": [0.9, 0.1], "car": [0.0, 1.0]}
    ids = cluster_answers(["cat", "car", "kitten"], mode="embedding",
                          embedder=lambda xs: torch.tensor([table[x] for x in xs]), threshold=0.9)
    assert ids == [0, 1, 0]


def test_embedding_mode_with_the_packaged_model():
    answers = [
        "The cat sat on the mat.",
        "Paris is the capital of France.",
        "A cat was sitting on the mat.",
        "The stock market crashed in 1929.",
        "France's capital city is Paris.",
        "On the mat, there sat a cat.",
    ]
    assert cluster_answers(answers, mode="embedding") == [0, 1, 0, 2, 1, 0]
