"""`python -m mio.cli ...` (and `torchrun -m mio.cli train ...`): the `mio` command."""

import sys

from mio.cli.main import main

sys.exit(main())
