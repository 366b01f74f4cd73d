"""Keeping generated images safely: the package behind `from studio.images import …`.

- `fetch`: downloading an output URL (no credentials, public addresses only,
  byte caps, one deadline for the whole download).
- `png`: the PNG codec (chunk splicing, text chunks, truncation checks).
- `recipe`: the recipe embedded in every kept PNG (`clean_recipe`, `read_recipe`).
- `keeper`: `ImageKeeper`, which verifies, stamps and puts images in the blob store.
- `errors`: the `DownloadError` family every part raises.
Each module's docstring states its contract. Nothing here imports streamlit.
"""

from __future__ import annotations

from .errors import (
    DownloadError,
    DownloadFailed,
    NotAnImage,
    OutputExpired,
    TooLarge,
    TruncatedDownload,
)
from .fetch import DOWNLOAD_DEADLINE_S, MAX_REDIRECTS, Downloader
from .keeper import ImageKeeper, KeptImage
from .recipe import RECIPE_CHUNK, RECIPE_KEYS, clean_recipe, read_recipe

__all__ = [
    "DOWNLOAD_DEADLINE_S",
    "MAX_REDIRECTS",
    "RECIPE_CHUNK",
    "RECIPE_KEYS",
    "DownloadError",
    "DownloadFailed",
    "Downloader",
    "ImageKeeper",
    "KeptImage",
    "NotAnImage",
    "OutputExpired",
    "TooLarge",
    "TruncatedDownload",
    "clean_recipe",
    "read_recipe",
]
