"""Old import path of `studio.hiapi.client`, kept so existing imports work."""

from .hiapi.client import *  # noqa: F403
from .hiapi.client import MAX_RESPONSE_BYTES as MAX_RESPONSE_BYTES  # not in __all__, used by tests
