"""`python -m zapgate.gateway.cli`: the same as the `zapgate` command."""

from __future__ import annotations

import sys

from zapgate.gateway.cli.main import main

sys.exit(main())
