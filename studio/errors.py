"""Old import path of `studio.hiapi.errors`, kept so existing imports work."""

from .hiapi.errors import *  # noqa: F403
