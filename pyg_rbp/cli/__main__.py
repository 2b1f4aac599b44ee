"""``python -m pyg_rbp.cli``: the same as the ``pyg-rbp`` console script."""

import sys

from pyg_rbp.cli import main

sys.exit(main())
