"""`python -m ticketlab ...` (and `torchrun ... -m ticketlab ...`): the command line."""

import sys

from ticketlab.cli import entry

sys.exit(entry())
