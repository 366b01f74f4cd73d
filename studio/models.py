"""Old import path of `studio.hiapi.models`, kept so existing imports work."""

from .hiapi.models import *  # noqa: F403
