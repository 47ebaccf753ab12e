"""``python -m engine`` is the ``sconnect`` command."""

from .cli import main

raise SystemExit(main())
