"""Pure tensor math on response-aligned (B, T) tensors: masked statistics, loss aggregation, token entropy and
log-probs (chunked and fused), KL estimators and entropy dynamics. Torch only."""

from .dynamics import (
    PAPER_TAIL_FRACTIONS,
    centered_covariance,
    covariance_tail_means,
    exact_entropy,
    npg_logit_change,
    pg_logit_change,
    predicted_entropy_change,
)
from .entropy import (
    fused_logprobs_entropy,
    logprobs_and_entropy,
    token_entropy,
    token_logprobs,
)
from .kl import KL_ESTIMATORS, canonical_kl_kind, full_kl, kl_estimate
from .masked import (
    AGGREGATION_MODES,
    aggregate_loss,
    masked_mean,
    masked_quantiles,
    masked_sum,
    masked_var,
    masked_whiten,
)
