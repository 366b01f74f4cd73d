"""Blob-store adapters beyond the local folder (`studio.blobs.LocalBlobStore`): each one
implements `studio.blobs.BlobStore` and passes tests/contracts/test_blob_store.py."""
