"""Command-line hooks of the integrations: ``entrolab train --engine trl``. No subcommand of its own; the TRL
adapter is imported only when that engine runs."""

from __future__ import annotations

from ..train.cli import TRAIN_ENGINES


def _train_trl(config) -> int:
    try:
        from .trl.run import train_with_trl
    except ImportError as e:
        from ..errors import ConfigError

        raise ConfigError(f"--engine trl needs TRL ({e.name} is missing): pip install -e '.[trl]'") from None
    return train_with_trl(config)


def register(subparsers) -> None:
    TRAIN_ENGINES["trl"] = _train_trl
