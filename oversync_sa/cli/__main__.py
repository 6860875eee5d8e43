"""``python -m oversync_sa.cli``: the same as the ``oversync-sa`` console script."""

import sys

from oversync_sa.cli import main

sys.exit(main())
