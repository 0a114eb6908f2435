"""The kill-and-resume check shared by the trainer tests: a run stopped by SIGTERM mid-training and resumed by a
fresh trainer must end exactly where an uninterrupted run ends."""

import os
import signal

import pytest
import torch

from vireid.engine.checkpoint import load_checkpoint
from vireid.engine.trainer import TrainingInterrupted


def kill_and_resume(make_trainer, out, kill_step: int, seed: int, stopped_at: str):
    """Train ``make_trainer(model_seed, run_dir)`` straight through into ``out/a``; train another into ``out/b``,
    SIGTERM it after global step ``kill_step`` (its error must match ``stopped_at``), then resume ``out/b`` with a
    fresh trainer built from another model seed and another global RNG state, so that everything the resumed run
    needs has to come from the checkpoint. Returns (uninterrupted trainer, checkpoint at the kill, resumed trainer).
    """
    torch.manual_seed(seed)
    plain = make_trainer(0, out / "a")
    plain.fit()

    torch.manual_seed(seed)
    first = make_trainer(0, out / "b")

    def kill(trainer, record):
        if record["global_step"] == kill_step:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match=stopped_at):
        first.fit(on_step=kill)
    state = load_checkpoint(out / "b" / "checkpoint.pt")

    torch.manual_seed(999)
    second = make_trainer(7, out / "b")
    assert second.resume()
    second.fit()
    return plain, state, second
