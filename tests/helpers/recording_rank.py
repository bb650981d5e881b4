"""`prismlab train` run under torchrun by the fsdp tests, with three things a real run cannot be told:
- SEEN_DIR: every valid training sample a rank steps on goes into SEEN_DIR/rank-<r>.txt as
  `<epoch> <digest of its pixels>` (the samples of an epoch, counted across a stop and a resume);
- STOP_AT_STEP: a stop is requested after that many steps, as a scheduler's signal would be, but at
  a known step;
- KILL_IN_SAVE=<rank>:<n>: that rank SIGKILLs itself while writing its shards of its n-th save.
"""

import hashlib
import os
import signal
import sys
from pathlib import Path

from torch.distributed.checkpoint import FileSystemWriter

from prismlab.cli import main
from prismlab.train.engine import Trainer
from prismlab.train.stop import STOP_REQUEST

RANK = int(os.environ["RANK"])
STOP_AT = int(os.environ.get("STOP_AT_STEP", "0"))
train_step = Trainer.train_step


def recorded(self, batch, want_grad_norm):
    with (Path(os.environ["SEEN_DIR"]) / f"rank-{RANK}.txt").open("a") as seen:
        for pixels, valid in zip(batch.pixels, batch.valid.tolist()):
            if valid:
                seen.write(f"{self.state.epoch} {hashlib.sha1(pixels.numpy().tobytes()).hexdigest()}\n")
    result = train_step(self, batch, want_grad_norm)
    if STOP_AT and self.state.step + 1 == STOP_AT:
        STOP_REQUEST.set()
    return result


Trainer.train_step = recorded

if "KILL_IN_SAVE" in os.environ:
    kill_rank, kill_at = map(int, os.environ["KILL_IN_SAVE"].split(":"))
    write_data = FileSystemWriter.write_data
    saves = 0

    def dying_write(self, plan, planner):
        global saves
        saves += 1
        if RANK == kill_rank and saves == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return write_data(self, plan, planner)

    FileSystemWriter.write_data = dying_write

sys.exit(main(sys.argv[1:]))
