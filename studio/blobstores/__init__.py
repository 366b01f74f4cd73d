"""Blob-store adapters beyond the local folder (`studio.blobs.LocalBlobStore`): each one
implements `studio.blobs.BlobStore` and passes tests/contracts/test_blob_store.py.

`blob_store_for(storage)` builds the store `STORAGE_URL` names (see studio/config.py); boto3
is imported only when the storage is S3, so a single-user studio never loads it.
"""

from __future__ import annotations

from ..blobs import BlobStore, LocalBlobStore
from ..config import StorageKind, StorageSettings


def blob_store_for(storage: StorageSettings) -> BlobStore:
    """The blob store `storage` describes: a local folder, or its bucket under its prefix."""
    if storage.kind is StorageKind.FILE:
        assert storage.root is not None
        return LocalBlobStore(storage.root)
    from .s3 import S3BlobStore, s3_client

    def client(quick: bool = False) -> object:
        return s3_client(
            endpoint_url=storage.endpoint_url,
            region=storage.region,
            access_key=storage.access_key,
            secret_key=storage.secret_key,
            session_token=storage.session_token,
            quick=quick,
        )

    return S3BlobStore(storage.bucket, storage.prefix, client(), probe=client(quick=True))
