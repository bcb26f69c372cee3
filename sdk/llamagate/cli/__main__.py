"""`python -m llamagate.cli`: the same as the `llamagate` command."""

import sys

from llamagate.cli import main

sys.exit(main())
