# The builtins and reserved words of the bash that runs this, one a line (rootdir.py lists them
# for the hooks).
compgen -b
compgen -k
