"""Suite-wide settings."""

import pytest
import torch

# The tensors in these tests are tiny: with several intra-op threads on a shared 2-core machine the toy runs are
# ~25x slower (thread spin/oversubscription), so the suite pins torch to one thread.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smollm2():
    """The packaged SmolLM2-135M-Instruct, loaded once per session (~20 s). Tests that change its weights restore
    them before returning."""
    from entrolab.train.models import load_model

    return load_model()
