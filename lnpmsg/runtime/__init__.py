"""Building and running a node from configuration: the one place a node is wired.

- :mod:`lnpmsg.runtime.settings`: :class:`NodeSettings` and the errors of building a node;
- :mod:`lnpmsg.runtime.build`: :func:`build_node`, :func:`run_node`, :class:`BuiltNode`;
- :mod:`lnpmsg.runtime.user_apps`: ``--app MODULE:ATTR`` loading;
- :mod:`lnpmsg.runtime.config_file`: ``DATA_DIR/lnpmsg.toml``, keyed like the flags.
"""

from lnpmsg.runtime.build import BuiltNode, build_node, check_settings, run_node
from lnpmsg.runtime.settings import (
    DEFAULT_DATA_DIR,
    DEFAULT_LISTEN,
    AppSpec,
    NodeSettings,
    SettingsError,
    StartError,
)
from lnpmsg.runtime.user_apps import load_app

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_LISTEN",
    "AppSpec",
    "BuiltNode",
    "NodeSettings",
    "SettingsError",
    "StartError",
    "build_node",
    "check_settings",
    "load_app",
    "run_node",
]
