"""Blobs in an S3-compatible bucket (AWS S3, R2, MinIO, SeaweedFS) under a key prefix.

Contract (`studio.blobs.BlobStore`, tested by tests/contracts/test_blob_store.py on SeaweedFS):
- `put` is one PutObject (or, for a large stream, one multipart upload completed at the end):
  S3 makes an object visible whole or not at all, so a reader never sees a part.
- `open` streams the object's body; `BlobNotFound` when it is absent.
- `url` is a presigned GET valid for `expires_s` seconds (SigV4 allows 1 s to 7 days): the
  browser and HiAPI fetch the bytes straight from the bucket.
- `keys(prefix)` lists under the store's own prefix and gives keys without it.
- `expire_after(prefixes, days=...)` sets one bucket lifecycle rule per prefix (expiry `days`
  after an object was written), keeping every rule the bucket already has; a bucket that
  refuses (NotImplemented, AccessDenied) is an `S3BlobError` with S3's code.
- Credentials live only inside the boto3 client: they are never in `repr`, a log line or an
  error. An S3 failure is an `S3BlobError` naming the operation, the key and S3's error code,
  raised without its cause (botocore's messages may quote request details); when the
  endpoint cannot be reached or answers that it is unavailable (5xx, SlowDown) it is an
  `S3Unavailable`, a `blobs.BlobStoreUnavailable` too, so callers wait for it to come back.
- `ping()` is one HeadBucket on a client that gives up within a few seconds.

boto3 rather than obstore: it is the reference client every S3-compatible store tests
against, its presigned URLs and path-style addressing work the same on AWS, R2, MinIO and
SeaweedFS, and it needs no async runtime in the studio's threads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

from ..blobs import BlobNotFound, BlobStoreUnavailable, check_key

#: SigV4 presigned URLs live at most 7 days.
MAX_URL_EXPIRY_S = 7 * 24 * 3600
_MISSING = {"404", "NoSuchKey", "NotFound"}
#: S3 error codes that say the store is unavailable for now, not that the request was wrong.
_UNAVAILABLE = {
    "ServiceUnavailable",
    "SlowDown",
    "InternalError",
    "RequestTimeout",
    "500",
    "502",
    "503",
    "504",
}
#: What GetBucketLifecycleConfiguration answers for a bucket that has no rules yet.
_NO_LIFECYCLE = {"NoSuchLifecycleConfiguration"}
#: S3 caps a lifecycle rule's ID at 255 characters.
_RULE_ID_MAX = 255


class S3BlobError(RuntimeError):
    """An S3 request failed for another reason than a missing key (down, refused, denied)."""


class S3Unavailable(S3BlobError, BlobStoreUnavailable):
    """The bucket's endpoint cannot be reached, or says it is unavailable for now."""


def _unreachable(exc: Exception) -> bool:
    from botocore.exceptions import ConnectionError as EndpointDown
    from botocore.exceptions import HTTPClientError

    return isinstance(exc, EndpointDown | HTTPClientError) or _code(exc) in _UNAVAILABLE


def s3_client(
    *,
    endpoint_url: str | None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
    quick: bool = False,
) -> Any:
    """A boto3 S3 client: SigV4, path-style addressing when an endpoint is given (most
    S3-compatible stores want it), a short retry budget. Credentials left None come from
    boto3's usual chain (AWS_* variables, profile, instance role). `quick`: one attempt
    with short timeouts, for asking whether the store answers."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region or "us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=session_token,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"max_attempts": 1 if quick else 3, "mode": "standard"},
            connect_timeout=1 if quick else 5,
            read_timeout=3 if quick else 60,
        ),
    )


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "")
    return ""


class S3BlobStore:
    """`studio.blobs.BlobStore` on a bucket: every key is stored as `prefix/key`."""

    def __init__(self, bucket: str, prefix: str, client: Any, *, probe: Any = None) -> None:
        if not bucket:
            raise ValueError("an S3 blob store needs a bucket name")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = check_key(prefix) + "/" if prefix else ""
        self._client = client
        self._probe = probe or client  # `ping`'s client: one quick attempt

    def __repr__(self) -> str:
        endpoint = getattr(getattr(self._client, "meta", None), "endpoint_url", None)
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={endpoint!r})"

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _fail(self, operation: str, key: str, exc: Exception) -> S3BlobError:
        code = _code(exc) or type(exc).__name__
        kind = S3Unavailable if _unreachable(exc) else S3BlobError
        return kind(f"S3 {operation} of {key!r} in bucket {self.bucket!r} failed ({code})")

    def ping(self) -> None:
        """`BlobStore.ping`: the bucket answers now, or S3Unavailable / S3BlobError within seconds."""
        try:
            self._probe.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise self._fail("head", "/", exc) from None

    def _is_missing(self, exc: Exception) -> bool:
        return _code(exc) in _MISSING

    def put(self, key: str, data: bytes | BinaryIO | Path) -> int:
        name = self._key(key)
        try:
            if isinstance(data, bytes | bytearray | memoryview):
                body = bytes(data)
                self._client.put_object(Bucket=self.bucket, Key=name, Body=body)
                return len(body)
            if isinstance(data, Path):
                size = data.stat().st_size
                self._client.upload_file(str(data), self.bucket, name)
                return size
            counted = _Counting(data)
            self._client.upload_fileobj(counted, self.bucket, name)
            return counted.count
        except Exception as exc:
            # A local file that cannot be read is the caller's; botocore's connection errors are OSErrors too.
            if isinstance(exc, OSError | ValueError) and not _unreachable(exc):
                raise
            raise self._fail("put", key, exc) from None

    def open(self, key: str) -> BinaryIO:
        name = self._key(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=name)
        except Exception as exc:
            if self._is_missing(exc):
                raise BlobNotFound(key) from None
            raise self._fail("open", key, exc) from None
        return cast(BinaryIO, response["Body"])

    def _head(self, key: str) -> dict[str, Any] | None:
        name = self._key(key)
        try:
            return cast(dict[str, Any], self._client.head_object(Bucket=self.bucket, Key=name))
        except Exception as exc:
            if self._is_missing(exc):
                return None
            raise self._fail("head", key, exc) from None

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int | None:
        head = self._head(key)
        return int(head["ContentLength"]) if head is not None else None

    def delete(self, key: str) -> bool:
        """True if the key held a blob just before; S3's DELETE itself does not say."""
        if not self.exists(key):
            return False
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._fail("delete", key, exc) from None
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    yield item["Key"][len(self.prefix) :]
        except Exception as exc:
            raise self._fail("list", prefix or "/", exc) from None

    def url(self, key: str, *, expires_s: int = 3600) -> str | None:
        name = self._key(key)
        if not 1 <= expires_s <= MAX_URL_EXPIRY_S:
            raise ValueError(f"a presigned URL lives 1 s to {MAX_URL_EXPIRY_S} s, not {expires_s}")
        try:
            return str(
                self._client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=expires_s
                )
            )
        except Exception as exc:
            raise self._fail("presign", key, exc) from None

    def _rule_id(self, prefix: str) -> str:
        """The ID of the studio's expiry rule for `prefix`: one per store prefix, so several
        studios in one bucket (each under its own prefix) never replace each other's rules."""
        name = f"studio-expire {self.prefix}{prefix}"
        if len(name) <= _RULE_ID_MAX:
            return name
        import hashlib

        return "studio-expire " + hashlib.sha256(name.encode()).hexdigest()

    def expire_after(self, prefixes: Sequence[str], *, days: int = 1) -> bool:
        """Make the bucket delete the objects under each of `prefixes` (inside the store's own
        prefix) `days` after they were written: one lifecycle rule per prefix, every other rule
        of the bucket kept as it is (S3 replaces a bucket's lifecycle configuration whole).
        Returns False when the bucket already had exactly these rules (nothing was written).
        S3BlobError naming S3's code when the bucket refuses to say or to take them."""
        if days < 1:
            raise ValueError(f"an S3 lifecycle expiry is at least 1 day, not {days}")
        wanted = [
            {
                "ID": self._rule_id(prefix),
                "Filter": {"Prefix": self.prefix + check_key(prefix.rstrip("/")) + "/"},
                "Status": "Enabled",
                "Expiration": {"Days": days},
            }
            for prefix in prefixes
        ]
        where = ", ".join(prefixes)
        try:
            answer = self._client.get_bucket_lifecycle_configuration(Bucket=self.bucket)
            rules = list(answer.get("Rules", ()))
        except Exception as exc:
            if _code(exc) not in _NO_LIFECYCLE:
                raise self._fail("lifecycle read", where, exc) from None
            rules = []
        ours = {rule["ID"] for rule in wanted}
        others = [rule for rule in rules if rule.get("ID") not in ours]
        if sorted((r for r in rules if r.get("ID") in ours), key=_rule_order) == sorted(
            wanted, key=_rule_order
        ):
            return False  # every replica's start asks; only the first writes
        try:
            self._client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket, LifecycleConfiguration={"Rules": others + wanted}
            )
        except Exception as exc:
            raise self._fail("lifecycle write", where, exc) from None
        return True


def _rule_order(rule: dict[str, Any]) -> str:
    return str(rule.get("ID"))


class _Counting:
    """A read-only wrapper that counts the bytes boto3 read from a stream."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._inner.read(size)
        self.count += len(chunk)
        return chunk
