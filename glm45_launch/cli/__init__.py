"""The command line: a thin Click layer over the library (``main.py``, ``options.py``, ``commands/``)."""

from glm45_launch.cli.main import cli, main, run

__all__ = ["cli", "main", "run"]
