"""The run engine: a recipe declares a grid of cells (``cells``, ``recipe``) and registers itself; the engine plans,
runs, resumes, spreads (``run``, ``store``, ``workers``), estimates (``probes``) and reports a run, knowing no recipe.
Every recipe's config contains one ``RunSpec`` (``spec``)."""

from cxrgan.engine.cells import Cell, CellResult, Plan, Shard, Table, TargetRow, grid
from cxrgan.engine.recipe import RECIPES, Recipe, RunContext, recipe_from_run, register_recipe
from cxrgan.engine.run import report_run, run_recipe
from cxrgan.engine.spec import RunSpec
from cxrgan.engine.store import Results

__all__ = ["Cell", "CellResult", "Plan", "Shard", "Table", "TargetRow", "grid", "RECIPES", "Recipe", "RunContext",
           "recipe_from_run", "register_recipe", "report_run", "run_recipe", "RunSpec", "Results"]
