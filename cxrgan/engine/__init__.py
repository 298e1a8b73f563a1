"""The run engine: a recipe declares a grid of cells; the engine plans, runs, resumes, spreads and reports it."""
