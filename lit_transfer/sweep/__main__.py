"""``python -m lit_transfer.sweep FILE ...``: the same as ``lit-transfer sweep FILE ...``."""

import sys

from lit_transfer.sweep.cli import main

sys.exit(main())
