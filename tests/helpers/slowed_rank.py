"""`prismlab train` in which one rank's data loading is slowed (SLOW_RANK, SLOW_AFTER batches in,
SLOW_SECONDS per batch): run under torchrun by the operations tests, to make a straggler or a hang."""

import os
import sys
import time

from prismlab.cli import main
from prismlab.datasets.read import loader

SLOW_RANK, SLOW_AFTER = int(os.environ["SLOW_RANK"]), int(os.environ["SLOW_AFTER"])
SLOW_SECONDS = float(os.environ["SLOW_SECONDS"])
run_epoch = loader.ShardLoader.run_epoch


def slowed(self, epoch, start):
    for i, batch in enumerate(run_epoch(self, epoch, start)):
        if int(os.environ["RANK"]) == SLOW_RANK and i >= SLOW_AFTER and self.stateful:
            time.sleep(SLOW_SECONDS)
        yield batch


loader.ShardLoader.run_epoch = slowed
sys.exit(main(sys.argv[1:]))
