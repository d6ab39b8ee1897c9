"""`python -m iree_glm.profile`: see iree_glm/cli/profile.py."""

import sys

from iree_glm.cli.profile import main
from iree_glm.errors import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(main))
