"""`python -m loom` runs the CLI (Ctrl-C even while it is imported: one line, exit 130)."""

import sys

try:
    from loom.cli import exit_now, interrupted, main
except KeyboardInterrupt:
    sys.stderr.write("loom: interrupted\n")
    sys.exit(130)

try:
    code = main()
except KeyboardInterrupt:  # between main's handler and here
    interrupted()
    exit_now(130)
sys.exit(code)
