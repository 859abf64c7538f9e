"""``python -m lit_transfer.report DIR``: the same as ``lit-transfer report DIR``."""

import sys

from lit_transfer.report.command import main

sys.exit(main())
