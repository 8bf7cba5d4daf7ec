"""The CLI's commands, one module each. Add a command here to register it."""

from glm45_launch.cli.commands.attach import attach
from glm45_launch.cli.commands.collect import collect
from glm45_launch.cli.commands.convert import convert
from glm45_launch.cli.commands.demo import demo
from glm45_launch.cli.commands.down import down
from glm45_launch.cli.commands.import_script import import_script
from glm45_launch.cli.commands.logs import logs
from glm45_launch.cli.commands.netcheck import netcheck
from glm45_launch.cli.commands.parity import parity
from glm45_launch.cli.commands.plan import plan
from glm45_launch.cli.commands.preflight import preflight
from glm45_launch.cli.commands.prepare import prepare
from glm45_launch.cli.commands.status import status
from glm45_launch.cli.commands.stop import stop
from glm45_launch.cli.commands.up import up
from glm45_launch.cli.commands.validate import validate

COMMANDS = [plan, validate, preflight, up, down, status, demo, convert, parity, import_script,
            logs, attach, stop, collect, prepare, netcheck]
