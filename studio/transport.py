"""Old import path of `studio.hiapi.transport`, kept so existing imports work."""

from .hiapi.transport import *  # noqa: F403
