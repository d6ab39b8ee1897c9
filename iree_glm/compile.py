"""`python -m iree_glm.compile`: see iree_glm/cli/compile.py."""

import sys

from iree_glm.cli.compile import main
from iree_glm.errors import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(main))
