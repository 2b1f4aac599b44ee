r"""Memory and time of one full-graph training step as the graph grows: ``pyg-rbp bench graph-size``.

``bench scaling`` asks how memory grows with the number of forward steps ``T`` on one graph;
this benchmark asks the question users with large graphs have: at ``T = 100``, ``K = 20``, how
large a graph can each gradient mode train in full-graph mode, and where does BPTT stop? For
every graph (synthetic power-law or uniform random graphs of a given size, average degree 10,
and the real Amazon / Coauthor graphs) and every mode (``bptt``, ``tbptt``, ``neumann`` by
default) it runs one configuration in a **fresh subprocess** and records

* ``saved_bytes``: the bytes autograd saves during the training step
  (:class:`~pyg_rbp.profiling.SavedTensorBytes`, peak of the saved tensors alive at once);
* the process peak memory: the peak resident set size (``VmHWM``, reset after the graph is
  built so graph generation is reported separately) and, on CUDA,
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``;
* the time of one training step (forward, cross-entropy on the training nodes, backward, SGD);
* where a mode does not fit, the point where it failed: phase (graph, forward, backward),
  forward steps done, bytes saved so far, the error. On CPU every subprocess runs under
  ``resource.setrlimit(RLIMIT_AS, memory_limit)``, so running out of memory is a caught
  ``MemoryError`` / allocator error inside that subprocess, never the kernel's OOM killer.

For the unrolled modes a probe (its own subprocess, configuration ``probe``, before the modes
of that graph) measures BPTT's saved bytes at ``T = 1`` and ``T = 2`` (forward only); they grow
linearly in the recorded steps, so the bytes at ``T`` (``bptt``) or ``K`` (``tbptt``) are
predicted, and reported beside the observed outcome. Where BPTT could not
run, the Neumann/BPTT memory ratio uses that prediction (and says so).

``largest_steps`` bisects, for one mode and graph, the largest ``T`` that still trains within
the memory limit (each try its own subprocess): the GPU script uses it for BPTT on an
ogbn-products-sized graph.

Results are written atomically after every configuration; a rerun with the same settings
skips what is finished (graphs and modes may be added), a rerun with other settings is refused
unless the old file is discarded (``fresh``).

The package, one job a module: :mod:`~.specs` (graph specs, building and reading graphs),
:mod:`~.config` (settings, fingerprint, the rows' vocabulary), :mod:`~.measure` (one
configuration, in its subprocess; ``python -m pyg_rbp.bench.graph_size`` runs it),
:mod:`~.run` (planning, resume, bisection), :mod:`~.targets` (the targets as a table and the
verdicts) and :mod:`~.report` (markdown and PNG).
"""

from pyg_rbp.bench.graph_size.config import (
    DEFAULT_GRAPHS,
    FINISHED,
    GRAPH_SIZE_GRADS,
    PROBE,
    SCHEMA,
    UNROLLED,
    GraphSizeConfig,
)
from pyg_rbp.bench.graph_size.measure import (
    NOTES,
    describe_row,
    is_out_of_memory,
    limit_address_space,
    measure_configuration,
    peak_rss_bytes,
    predict_saved_bytes,
    probe_unrolled_bytes,
    recorded_steps,
    reset_peak_rss,
    run_configuration,
)
from pyg_rbp.bench.graph_size.report import check_outputs, markdown_report, plot, write_reports
from pyg_rbp.bench.graph_size.run import GraphSizeRun
from pyg_rbp.bench.graph_size.specs import (
    REAL_GRAPHS,
    SYNTHETIC,
    GraphSpec,
    RealGraph,
    build_graph,
    load_real_graph,
    parse_graph,
    parse_size,
)
from pyg_rbp.bench.graph_size.targets import TARGETS, Target, bptt_bytes, verdicts

__all__ = [
    "DEFAULT_GRAPHS", "FINISHED", "GRAPH_SIZE_GRADS", "NOTES", "PROBE", "REAL_GRAPHS", "SCHEMA",
    "SYNTHETIC", "TARGETS", "UNROLLED", "GraphSizeConfig", "GraphSizeRun", "GraphSpec",
    "RealGraph", "Target", "bptt_bytes", "build_graph", "check_outputs", "describe_row",
    "is_out_of_memory", "limit_address_space", "load_real_graph", "markdown_report",
    "measure_configuration", "parse_graph", "parse_size", "peak_rss_bytes", "plot",
    "predict_saved_bytes", "probe_unrolled_bytes", "recorded_steps", "reset_peak_rss",
    "run_configuration", "verdicts", "write_reports",
]
