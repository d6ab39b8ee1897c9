"""`python -m iree_glm.serve`: see iree_glm/cli/serve.py."""

import sys

from iree_glm.cli.serve import main
from iree_glm.errors import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(main))
