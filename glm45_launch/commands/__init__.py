"""The CLI's commands, one module each. Add a command here to register it."""

from .convert import convert
from .down import down
from .import_script import import_script
from .parity import parity
from .plan import plan
from .status import status
from .up import up
from .validate import validate

COMMANDS = [plan, validate, up, down, status, convert, parity, import_script]
