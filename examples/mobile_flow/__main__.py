"""``python -m examples.mobile_flow``: see :mod:`examples.mobile_flow.cli`."""

import sys

from examples.mobile_flow.cli import main

sys.exit(main())
