"""`python -m iree_glm.run`: see iree_glm/cli/run.py."""

import sys

from iree_glm.cli.run import main
from iree_glm.errors import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(main))
