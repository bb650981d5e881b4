"""One place that configures logging: INFO on the main process, WARNING on the other ranks."""

from __future__ import annotations

import logging

from prismlab.dist_env import global_rank


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO if global_rank() == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # Third-party libraries are chatty at INFO.
    for name in ("wandb", "accelerate", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)
