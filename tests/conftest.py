"""Suite-wide settings."""

import torch

# The tensors in these tests are tiny: with several intra-op threads on a shared 2-core machine the toy runs are
# ~25x slower (thread spin/oversubscription), so the suite pins torch to one thread.
torch.set_num_threads(1)
