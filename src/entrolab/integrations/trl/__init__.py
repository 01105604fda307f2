"""entrolab inside TRL: ``EntrolabGRPOTrainer`` (``trainer.py``), a ``GRPOTrainer`` subclass that runs entrolab's
advantage and loss knobs, and ``train_with_trl`` (``run.py``), what ``entrolab train --engine trl`` runs. TRL is an
optional extra (``pip install -e ".[trl]"``), imported when these modules are. docs/scale-out.md."""


def __getattr__(name: str):
    if name == "EntrolabGRPOTrainer":
        from .trainer import EntrolabGRPOTrainer

        return EntrolabGRPOTrainer
    if name == "train_with_trl":
        from .run import train_with_trl

        return train_with_trl
    raise AttributeError(name)
