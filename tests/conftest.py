"""Suite-wide settings."""

import textwrap

import pytest
import torch

# The tensors in these tests are tiny: with several intra-op threads on a shared 2-core machine the toy runs are
# ~25x slower (thread spin/oversubscription), so the suite pins torch to one thread.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smollm2():
    """The packaged SmolLM2-135M-Instruct, loaded once per session (~20 s). Tests that change its weights restore
    them before returning."""
    from entrolab.engine.models import load_model

    return load_model()


REWARD_MODULE = textwrap.dedent('''
    def letter_a(completion, example):
        """A reward the random tiny model earns sometimes: the share of 'a' characters, so groups vary."""
        return completion.count("a") / max(1, len(completion))
''')


@pytest.fixture
def reward_path(tmp_path, monkeypatch):
    """``data.reward_fn`` for trainer runs on the tiny random model (it never solves a task)."""
    (tmp_path / "tiny_rewards.py").write_text(REWARD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tiny_rewards:letter_a"
