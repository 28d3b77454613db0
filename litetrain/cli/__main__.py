"""`python -m litetrain.cli`: the same as the `litetrain` command."""
import sys

from . import main

sys.exit(main())
