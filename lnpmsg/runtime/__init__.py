"""Building and running a node from configuration: the one place a node is wired.

- :mod:`lnpmsg.runtime.settings`: :class:`NodeSettings` and the errors of building a node;
- :mod:`lnpmsg.runtime.build`: :func:`build_node`, :func:`run_node`, :class:`BuiltNode`;
- :mod:`lnpmsg.runtime.user_apps`: ``--app MODULE:ATTR`` loading;
- :mod:`lnpmsg.runtime.config_file`: ``DATA_DIR/lnpmsg.toml``, keyed like the flags.
"""

from typing import TYPE_CHECKING

from lnpmsg._lazy import lazy_exports
from lnpmsg.runtime.settings import (
    DEFAULT_DATA_DIR,
    DEFAULT_LISTEN,
    AppSpec,
    NodeSettings,
    SettingsError,
    StartError,
)

if TYPE_CHECKING:
    from lnpmsg.runtime.build import BuiltNode, build_node, check_settings, run_node
    from lnpmsg.runtime.user_apps import load_app

# imported on first use: the control commands read the settings module alone, and
# building a node loads every app
__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        **dict.fromkeys(("BuiltNode", "build_node", "check_settings", "run_node"), "lnpmsg.runtime.build"),
        "load_app": "lnpmsg.runtime.user_apps",
    },
)

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
