"""The fixed inputs on which catalog V's methods are compared with their anchors (verl 0.9.1, TRL 1.16).

``scripts/anchor_numbers.py`` feeds these to the anchors' own functions (in a scratch environment where they are
installed) and prints the numbers that ``tests/test_methods_baselines.py`` holds; the tests feed the same inputs to
entrolab. Plain lists, so both sides build identical float32 tensors.
"""

# ------------------------------------------------------------------------------------------- policy losses
# Four responses, T = 4, lengths 4, 3, 2, 4 (padding log-probs −1, masked out everywhere). The log-ratios hit each
# branch: a ratio of e^3.2 ≈ 24.5 (past CISPO's cap 5 and DPPO's truncation 20), tokens past PPO's ε = 0.2 on both
# sides, a token moving by 0.29 in probability (outside DPPO's TV and KL regions), one moving by 0.151 near p = ½
# (outside the TV region, inside the KL one: binary KL 0.0465), and small moves.
LENGTHS = [4, 3, 2, 4]
OLD_LOGPROBS = [[-0.8, -0.3, -3.5, -0.8],
                [-0.6, -1.9, -0.1, -1.0],
                [-2.2, -0.05, -1.0, -1.0],
                [-0.4, -1.5, -0.9, -2.0]]
LOG_RATIO = [[0.29, -0.4, 3.2, 0.5],
             [-0.5, 0.15, -0.02, 0.0],
             [0.6, -0.5, 0.0, 0.0],
             [0.1, 0.3, -0.6, 0.05]]
SEQ_ADVANTAGES = [1.3, -0.7, 0.4, -1.1]
"""One advantage per response, on every valid token (0 on padding)."""

# ------------------------------------------------------------------------------------------- advantage estimators
# Two groups of three responses, T = 4.
ADV_LENGTHS = [4, 3, 2, 4, 1, 3]
ADV_REWARDS = [1.0, 0.0, 0.5, 1.0, 0.0, 0.25]
ADV_GROUPS = [0, 0, 0, 1, 1, 1]
VALUES = [[0.2, 0.4, 0.5, 0.7],
          [0.1, -0.2, 0.3, 0.0],
          [0.6, 0.5, 0.0, 0.0],
          [0.9, 0.8, 0.85, 0.95],
          [0.3, 0.0, 0.0, 0.0],
          [0.05, 0.1, 0.2, 0.0]]
"""The value model's predictions at the rollout (GAE), 0 on padding."""
GREEDY_REWARDS = [0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
"""ReMax's baseline: the greedy response's reward of each row's prompt."""
ADV_OLD_LOGPROBS = [[-0.2, -1.4, -0.7, -2.1],
                    [-0.9, -0.3, -1.1, -1.0],
                    [-1.6, -0.5, -1.0, -1.0],
                    [-0.05, -0.8, -2.4, -0.6],
                    [-1.3, -1.0, -1.0, -1.0],
                    [-0.4, -0.9, -0.25, -1.0]]
SUM_PI_SQUARED = [[0.70, 0.30, 0.45, 0.20],
                  [0.40, 0.60, 0.35, 0.0],
                  [0.25, 0.55, 0.0, 0.0],
                  [0.90, 0.50, 0.15, 0.45],
                  [0.30, 0.0, 0.0, 0.0],
                  [0.65, 0.40, 0.75, 0.0]]
"""Σ_v π_v² of the rollout policy at each position (optimal token baseline), 0 on padding."""
CORRECT = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
FORMAT = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
"""GDPO's two reward components."""

# ------------------------------------------------------------------------------------------- value loss
VPREDS = [[0.9, 0.1, 0.9, 0.6],
          [0.0, 0.4, -0.5, 0.0],
          [0.2, 1.4, 0.0, 0.0],
          [1.2, 0.7, 0.3, 1.0],
          [0.9, 0.0, 0.0, 0.0],
          [0.1, 0.0, 0.6, 0.0]]
"""The critic's current predictions in an update (against VALUES as the rollout's, clip 0.5)."""
