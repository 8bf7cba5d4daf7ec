"""Recipes as data: the bash recipe and the models it can run."""

from glm45_launch.recipes.base import Argv, Recipe, fill, fill_all
from glm45_launch.recipes.glm45_bash import RECIPE as BASH_RECIPE
from glm45_launch.recipes.models import MODELS, ModelSpec, get_model

__all__ = [
    "Argv", "BASH_RECIPE", "MODELS", "ModelSpec", "Recipe", "fill", "fill_all", "get_model",
]
