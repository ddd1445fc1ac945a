"""The figures, computations and texts of each notebook, one module per notebook (its runs: memlib.experiments)."""
