"""The paper's tasks built on the engine: Hopfield associative memory and hyperparameter optimisation."""
