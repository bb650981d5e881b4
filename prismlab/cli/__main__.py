"""`python -m prismlab.cli` (as torchrun and `accelerate launch -m` start it)."""

import sys

from prismlab.cli import main

sys.exit(main())
