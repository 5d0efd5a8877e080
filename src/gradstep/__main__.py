"""``python -m gradstep`` (and ``torchrun ... -m gradstep fit CONFIG``): the command line."""

import sys

from gradstep.cli import main

sys.exit(main())
