"""The ``sconnect`` command line (also ``python -m engine``)."""

from .main import main as main
