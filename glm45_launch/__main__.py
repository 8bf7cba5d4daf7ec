"""``python -m glm45_launch``: the same as the ``glm45-launch`` console script."""

from glm45_launch.cli.main import run

if __name__ == "__main__":
    run()
