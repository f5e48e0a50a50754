"""``python -m pycluster.master.forkserver TARGET``: the fork server (started by ``pycluster run --preload``)."""

import sys

from .server import main

sys.exit(main())
