"""Options several ``sconnect`` commands share (``--config``, ``--state-dir``)."""

from __future__ import annotations

import argparse
import os


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="DIR",
        help="configuration directory holding agents.d/, tools.d/, resources.d/, policies/ "
        "(default: the current directory if it is one, else the shipped example)",
    )


def add_state_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        default=os.environ.get("SCONNECT_STATE_DIR", ".sconnect"),
        help="state directory: database, audit log, secrets, workspace (default ./.sconnect)",
    )
