"""`python -m cynode.node` is `cynode-node`."""

import sys

from .cli import main

sys.exit(main())
