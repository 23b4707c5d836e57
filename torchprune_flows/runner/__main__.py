import sys

from .cli import run_from_command_line

if __name__ == "__main__":  # not when a spawned worker re-imports the main module
    sys.exit(run_from_command_line())
