"""The ``glm45-launch`` command line: a thin Click layer over the library.

Every failure ends as one line on stderr and a non-zero exit: ``LaunchError`` with its
own code, Click usage errors with 2, anything unexpected with 70 (no traceback unless
``GLM45_DEBUG=1``).
"""

from __future__ import annotations

import os
import sys

import click

from glm45_launch.core.quoting import printable
from glm45_launch.errors import PROG, ExitCode, LaunchError

# click >= 8.2 raises this for a bare group (help, not an error); click 8.1 has no such
# class and exits 0 after printing the help itself. An empty tuple catches nothing.
_NO_ARGS_IS_HELP: type[Exception] | tuple[()] = getattr(click.exceptions, "NoArgsIsHelpError", ())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="glm45-launch", prog_name=PROG)
def cli() -> None:
    """Launch GLM-4.5 RL post-training (slime/miles) on a bare-metal rack: the bash
    recipe's exact commands, planned, checked and run over SSH and Ray."""


def _register() -> None:
    """Each command lives in ``glm45_launch.cli.commands.<name>``; heavy imports stay inside them."""
    from glm45_launch.cli.commands import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)


_register()


def one_line(text: str) -> str:
    """``text`` as one printable line: user input in a message (a path with a carriage
    return, an escape sequence) is shown escaped, never acted on by the terminal."""
    return printable(text.replace("\n", " "))


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn every failure into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    try:
        # Not cli.main(): on Ctrl-C it prints an empty line and raises Abort; here Ctrl-C is one line.
        with cli.make_context(PROG, list(args)) as ctx:
            rv = cli.invoke(ctx)
    except LaunchError as exc:
        click.echo(f"{PROG}: error: {one_line(str(exc))}", err=True)
        return exc.exit_code
    except _NO_ARGS_IS_HELP as exc:  # the bare command: its help, not an error
        click.echo(exc.format_message(), err=True)
        return ExitCode.USAGE
    except click.ClickException as exc:
        click.echo(f"{PROG}: error: {one_line(exc.format_message())}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo(f"{PROG}: aborted", err=True)
        return ExitCode.INTERRUPTED
    except KeyboardInterrupt:
        click.echo(f"{PROG}: interrupted", err=True)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        return ExitCode.BROKEN_PIPE
    except Exception as exc:  # the last line of defence: never a traceback
        if os.environ.get("GLM45_DEBUG"):
            raise
        click.echo(f"{PROG}: internal error: {type(exc).__name__}: {one_line(str(exc))} "
                   "(GLM45_DEBUG=1 shows the traceback)", err=True)
        return ExitCode.INTERNAL
    return int(rv) if isinstance(rv, int) else ExitCode.OK


def run() -> None:
    sys.exit(main())
