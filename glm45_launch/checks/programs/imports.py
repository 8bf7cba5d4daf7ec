"""Import the job's modules, as its Ray workers and driver would: one JSON line of what failed.

Run by the preflight probe as ``python3 -c PROGRAM MARKER MODULE...`` with the job's runtime env
applied. A ``MODULE`` written ``?name`` is only located (found on ``sys.path``, not run: a
heavy import such as torch costs seconds). Standard library only, Python 3.6 syntax; prints
``MARKER`` + ``{module: null | "Type: message"}``.
"""
# ruff: noqa: BLE001 - an import may raise anything; it is reported, never raised
import importlib
import importlib.util
import json
import sys

found = {}
for word in sys.argv[2:]:
    module = word.lstrip("?")
    try:
        if word.startswith("?"):
            if importlib.util.find_spec(module) is None:
                raise ModuleNotFoundError("No module named '" + module + "'")
        else:
            importlib.import_module(module)
        found[module] = None
    except BaseException as e:
        lines = str(e).strip().splitlines()
        found[module] = type(e).__name__ + (": " + lines[0] if lines else "")
sys.stdout.write(sys.argv[1] + json.dumps(found) + "\n")
sys.stdout.flush()
