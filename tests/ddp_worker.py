"""Trains a toy model under torchrun (or alone) for the DDP equivalence test.

usage: ddp_worker.py OUT_DIR [--global]   (--global: one process, whole global batches)
Rank r of W takes global batches r, r+W, ... (as the cross-modality sampler does);
one process with --global takes each group of W global batches concatenated.
"""

import sys

import torch

from vireid.engine.distributed import init_distributed
from vireid.engine.trainer import Trainer
from vireid.methods.base import Method
from vireid.schema import TrainSettings

WORLD = 2


class Batches:
    def __init__(self, rank, world, whole):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
        self.rank, self.world, self.whole = rank, world, whole

    def __len__(self):
        return 64 // 8 // WORLD

    def epoch(self, epoch, start=0):
        order = torch.randperm(64, generator=torch.Generator().manual_seed(epoch))
        batches = [order[i * 8:(i + 1) * 8] for i in range(8)]
        for step in range(start, len(self)):
            group = batches[step * WORLD:(step + 1) * WORLD]
            idx = torch.cat(group) if self.whole else group[self.rank]
            yield self.x[idx], self.y[idx]


class Recipe(Method):
    name = "toy"

    def __init__(self):
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    def param_groups(self):
        return [{"params": self.model.parameters()}]

    def training_step(self, model, batch):
        x, y = batch
        return {"loss": torch.nn.functional.cross_entropy(model(x), y)}


if __name__ == "__main__":
    out, whole = sys.argv[1], "--global" in sys.argv
    info = init_distributed("cpu")
    trainer = Trainer(Recipe(), Batches(info.rank, info.world_size, whole),
                      TrainSettings(epochs=2, optimizer="sgd", lr=0.5, momentum=0.0), out, dist_info=info,
                      progress=False)
    trainer.fit()
