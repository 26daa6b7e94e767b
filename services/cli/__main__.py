"""``python -m fleetward.services.cli``: the same as the ``fleetward`` command."""

import sys

from fleetward.services.cli.entry import main

sys.exit(main())
