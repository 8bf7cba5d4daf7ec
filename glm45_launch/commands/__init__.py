"""The CLI's commands, one module each. Add a command here to register it."""

from .convert import convert
from .demo import demo
from .down import down
from .import_script import import_script
from .parity import parity
from .plan import plan
from .preflight import preflight
from .status import status
from .up import up
from .validate import validate

COMMANDS = [plan, validate, preflight, up, down, status, demo, convert, parity, import_script]
