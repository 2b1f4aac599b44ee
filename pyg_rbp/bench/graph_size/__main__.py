"""``python -m pyg_rbp.bench.graph_size CONFIG_JSON GRAPH GRAD STEPS OUT_JSON``: measure one
configuration in this (fresh) process and write its row; what
:func:`~pyg_rbp.bench.graph_size.run_configuration` launches."""

import sys

from pyg_rbp.bench.graph_size.measure import _worker_main

if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
