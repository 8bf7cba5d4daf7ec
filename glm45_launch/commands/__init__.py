"""The CLI's commands, one module each. Add a command here to register it."""

from .plan import plan

COMMANDS = [plan]
