"""``glm45-launch import``: a bash launcher -> a recipe file that plans back to its argv."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from glm45_launch.cli.commands.parity import recording_options
from glm45_launch.cli.options import by_name, options


@click.command("import")
@click.argument("script", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Recipe file to write (TOML).")
@recording_options
@options(
    by_name("hostfile", help="Hostfile the script's hard-coded one is redirected to (and the check plans with)."),
    by_name("head"),
    by_name("base_dir", help="BASE_DIR of the recording [env BASE_DIR]."),
    by_name("socket_ifname"),
    by_name("env_args", help="Set K=V in the script's environment (BASE_DIR etc. also set the inputs above)."),
)
@click.option("--name", default=None, help="Recipe name [default: the script's name].")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def import_script(script: str, **kwargs: Any) -> int:
    """Record SCRIPT in the sandbox under shims (nothing real runs) and write the recipe it amounts to.

    Train arguments are attributed to the default recipe's groups by flag, in their original
    order; $BASE_DIR, the head and worker addresses, GPUs per node, node count and Ray ports
    become placeholders again. The recipe is then planned with the same inputs and compared
    with the recording, strictly: OUTPUT is written (exit 0) only when `plan --recipe OUTPUT`
    reproduces the script exactly. Inline code (`python3 -c`, `$(python3 -c ...)`), a command
    the recorder does not know, a flag that lost its value, a skipped write: nothing is
    written, exit 1, each named with its line in the script.
    """
    from glm45_launch.cli.commands.parity import expose_paths, script_env
    from glm45_launch.core.hostfile import load_hostfile
    from glm45_launch.core.recipe_file import save_recipe
    from glm45_launch.core.secrets import mask_text
    from glm45_launch.errors import LaunchError
    from glm45_launch.sandbox.importer import import_run, verify
    from glm45_launch.sandbox.parity import run_script, secrets_of
    from glm45_launch.sandbox.report import collapse

    out = Path(kwargs["output"])
    if out.exists() and not kwargs["force"]:
        raise LaunchError(f"{out}: exists (give --force to overwrite)")
    opts = {"base_dir": kwargs["base_dir"], "head": kwargs["head"], "socket_ifname": kwargs["socket_ifname"],
            "env_args": kwargs["env_args"]}
    env = script_env(opts)
    if not opts["head"] or not opts["base_dir"]:
        raise LaunchError("import: give the recording's inputs: --head/MLP_WORKER_0_HOST and --base-dir/BASE_DIR")
    hostfile = load_hostfile(kwargs["hostfile"])
    run = run_script(script, env=env, hostfile=kwargs["hostfile"], timeout=kwargs["timeout"],
                     script_hostfile=kwargs["script_hostfile"], args=kwargs["script_args"],
                     expose=expose_paths(kwargs["expose"]))
    if run.recording.timed_out:
        raise LaunchError(f"{script}: timed out after {kwargs['timeout']:g} s under the shims; nothing imported",
                          exit_code=1)
    name = kwargs["name"] or Path(script).stem
    imported = import_run(run, head=opts["head"], base_dir=opts["base_dir"], hostfile=hostfile, name=name,
                          description=f"imported from {os.path.basename(script)} by glm45-launch import")
    report = verify(imported, run, head=opts["head"], base_dir=opts["base_dir"], hostfile=hostfile,
                    socket_ifname=opts["socket_ifname"], script=script)
    secrets = secrets_of(None, run)

    def echo(text: str) -> None:
        click.echo(mask_text(text, secrets))

    for note in run.notes:
        echo(f"  ? {note}")
    for w in imported.warnings:
        echo(f"  ! {w}")
    if not report.identical:
        echo(f"import: {script}: no recipe written: it would not run what the script runs")
        for line in report.output_tail:
            echo(f"  | {line}")
        for d in collapse(report.differences):
            echo(f"  {d}")
        return 1
    header = [
        f"Recipe imported from {script} by `glm45-launch import`.",
        f"Recorded with BASE_DIR={opts['base_dir']} head={opts['head']} hostfile={kwargs['hostfile']}",
        f"Plan it with: glm45-launch plan --recipe {out.name} --ssh-user {imported.ssh_user}",
    ]
    header += [f"WARNING: {w}" for w in imported.warnings]
    save_recipe(imported.recipe, out, header)
    echo(f"wrote {out} (recipe {imported.recipe.name}, {sum(1 for w in imported.recipe.groups.values() if w)} "
         f"non-empty groups, {len(imported.recipe.env_vars)} runtime env vars)")
    if any(secrets):
        echo(f"  ! {out} holds the script's API keys/tokens as they were: keep it private")
    echo(f"round trip: identical ({report.plan_invocations} invocations)")
    return 0
