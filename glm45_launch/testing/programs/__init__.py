"""Programs the rack-in-a-box runs inside its hosts (package data, run as files, linted)."""
