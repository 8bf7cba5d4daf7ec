"""glm45-launch: the GLM-4.5 RL launch recipe as a library.

hostfile -> recipe -> plan -> executor::

    from glm45_launch import LaunchSpec, build_plan, load_hostfile

    spec = LaunchSpec(hostfile=load_hostfile("hosts"), head="10.0.0.1", base_dir="/data")
    plan = build_plan(spec)          # pure: the exact commands, nothing runs
    plan.invocations()               # bash-equivalent argv lists

Heavy dependencies (ray, paramiko, rich) are imported only by the modules that run things.
"""

from glm45_launch.core.builder import build_plan
from glm45_launch.core.hostfile import Host, Hostfile, load_hostfile, parse_hostfile_text
from glm45_launch.core.plan import LaunchSpec, Plan
from glm45_launch.core.steps import Step
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import BASH_RECIPE, MODELS, Recipe

__all__ = [
    "BASH_RECIPE", "MODELS", "Host", "Hostfile", "LaunchError", "LaunchSpec", "Plan", "Recipe",
    "Step", "build_plan", "load_hostfile", "parse_hostfile_text",
]
