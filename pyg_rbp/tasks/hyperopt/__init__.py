"""Hyperparameter optimisation by recurrent back-propagation through the training dynamics.

The public face of the task (Liao et al. 2018, section 4.3): an inner training run of momentum
SGD is a dynamical system in (weights, momenta); its learning rates, momenta and weight decays
enter the update map, and :func:`pyg_rbp.fixed_point` differentiates the meta objective through
it in any gradient mode. The pieces live in their own modules:

* :mod:`~pyg_rbp.tasks.hyperopt.dynamics`: the update map and the hyperparameters;
* :mod:`~pyg_rbp.tasks.hyperopt.problems`: the inner problems (MLP on MNIST / digits, GCN on Cora);
* :mod:`~pyg_rbp.tasks.hyperopt.meta`: hypergradients (what each mode computes) and meta-training;
* :mod:`~pyg_rbp.tasks.hyperopt.experiment`: the resumable all-modes comparison behind
  ``pyg-rbp hyperopt``; :mod:`~pyg_rbp.tasks.hyperopt.report`: its markdown and PNG.

Example::

    from pyg_rbp.tasks.hyperopt import load_task, hypergradient, meta_train

    problem = load_task("mlp-digits")
    hg = hypergradient(problem, problem.hyperparameters(), grad="neumann",
                       max_iter=100, backward_iter=50, seed=0)
    run, tuned = meta_train(problem, grad="neumann", meta_steps=100, max_iter=100, backward_iter=50)
"""

from pyg_rbp.tasks.hyperopt.dynamics import Episode, Hyperparameters, InnerTraining, ParamSpec
from pyg_rbp.tasks.hyperopt.experiment import ExperimentConfig, run_experiment
from pyg_rbp.tasks.hyperopt.meta import (
    Hypergradient,
    MetaRun,
    cosine,
    evaluate_hyperparameters,
    hypergradient,
    last_step_spectral_radius,
    memory_scaling,
    meta_train,
)
from pyg_rbp.tasks.hyperopt.problems import TASKS, GCNProblem, InnerProblem, MLPProblem, load_task

__all__ = [
    "TASKS",
    "Episode",
    "ExperimentConfig",
    "GCNProblem",
    "Hypergradient",
    "Hyperparameters",
    "InnerProblem",
    "InnerTraining",
    "MLPProblem",
    "MetaRun",
    "ParamSpec",
    "cosine",
    "evaluate_hyperparameters",
    "hypergradient",
    "last_step_spectral_radius",
    "load_task",
    "memory_scaling",
    "meta_train",
    "run_experiment",
]
