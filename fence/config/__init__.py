"""The node's configuration: a typed, file-backed store of components and key paths."""

from fence.config.store import ChangeResult, ConfigStore

__all__ = ["ChangeResult", "ConfigStore"]
