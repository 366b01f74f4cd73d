"""How the simulator signs its callbacks, as HiAPI does.

Written here on its own rather than taken from the client's webhooks module,
so that a mistake in one side's signature is caught by the other's check.
"""

from __future__ import annotations

import hashlib
import hmac


def sign(signing_key: str, timestamp: str, body: bytes) -> str:
    """HiAPI's callback signature: hex HMAC-SHA256(key, timestamp + "." + raw body)."""
    return hmac.new(signing_key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
