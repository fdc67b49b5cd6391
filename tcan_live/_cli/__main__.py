"""``python -m tcan_live._cli``: the ``tcan-live`` command."""

from tcan_live._cli import main

raise SystemExit(main())
