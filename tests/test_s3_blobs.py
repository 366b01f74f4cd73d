"""The S3 blob store beyond the shared contract: prefixes, presigned URLs that expire, and
credentials that never leak into a repr, an error or a log line (on SeaweedFS)."""

from __future__ import annotations

import logging
import time
import traceback
import uuid

import httpx
import pytest

from studio.blobs import BlobNotFound
from studio.blobstores.s3 import MAX_URL_EXPIRY_S, S3BlobError, S3BlobStore, s3_client
from tests.support import free_port, wait_for


def _store(s3_server, client=None) -> S3BlobStore:
    return S3BlobStore(s3_server.bucket, f"t/{uuid.uuid4().hex}", client or s3_server.client())


def test_two_prefixes_in_one_bucket_do_not_see_each_other(s3_server) -> None:
    a, b = _store(s3_server), _store(s3_server)
    a.put("exports/x.zip", b"a")
    assert list(a.keys()) == ["exports/x.zip"]
    assert list(b.keys()) == []
    assert not b.exists("exports/x.zip")
    raw = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=a.prefix)
    assert [o["Key"] for o in raw["Contents"]] == [a.prefix + "exports/x.zip"]


def test_a_large_stream_is_uploaded_whole(s3_server) -> None:
    import io

    store = _store(s3_server)
    data = bytes(range(251)) * 40_000  # ~10 MB: boto3 uploads it in parts, completed at the end
    assert store.put("kits/big.zip", io.BytesIO(data)) == len(data)
    with store.open("kits/big.zip") as f:
        assert f.read() == data


def test_a_presigned_url_expires(s3_server) -> None:
    store = _store(s3_server)
    store.put("refs/soon.png", b"soon")
    url = store.url("refs/soon.png", expires_s=1)
    assert url is not None and "X-Amz-Expires=1" in url
    wait_for(lambda: httpx.get(url, timeout=10).status_code == 403, timeout=30, step=0.25)


@pytest.mark.parametrize("expires", [0, -5, MAX_URL_EXPIRY_S + 1])
def test_a_url_lifetime_outside_what_sigv4_signs_is_refused(s3_server, expires: int) -> None:
    with pytest.raises(ValueError, match="presigned URL lives"):
        _store(s3_server).url("refs/x.png", expires_s=expires)


def test_credentials_are_never_in_a_repr_an_error_or_a_log(s3_server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    good = _store(s3_server)
    good.put("a/b", b"x")
    wrong_secret = "wrong-" + s3_server.secret_key[:8] + "-secret"
    bad = _store(
        s3_server,
        s3_client(
            endpoint_url=s3_server.endpoint_url, access_key=s3_server.access_key, secret_key=wrong_secret
        ),
    )
    failures: list[str] = []
    for action in (lambda: bad.put("a/b", b"y"), lambda: bad.open("a/b"), lambda: list(bad.keys())):
        with pytest.raises(S3BlobError) as info:
            action()
        failures.append("".join(traceback.format_exception(info.value)))
    assert all("SignatureDoesNotMatch" in f or "AccessDenied" in f for f in failures)
    assert "botocore" in caplog.text  # the client logged its requests at DEBUG: the check sees them
    seen = "\n".join([repr(good), repr(bad), *failures, caplog.text])
    for secret in (s3_server.secret_key, wrong_secret):
        assert secret not in seen
    assert s3_server.access_key not in repr(good) + "".join(failures)


def test_a_store_that_is_down_is_one_error_not_a_missing_blob(s3_server) -> None:
    down = S3BlobStore(
        "studio",
        "p",
        s3_client(endpoint_url=f"http://127.0.0.1:{free_port()}", access_key="k", secret_key="nope-secret"),
    )
    with pytest.raises(S3BlobError, match=r"S3 open of 'x' in bucket 'studio' failed"):
        down.open("x")
    with pytest.raises(S3BlobError):
        down.exists("x")
    with pytest.raises(BlobNotFound):
        _store(s3_server).open("x")


def test_storage_url_builds_the_store_it_names(s3_server, tmp_path) -> None:
    from studio.blobs import LocalBlobStore
    from studio.blobstores import blob_store_for
    from studio.config import Settings

    prefix = f"cfg/{uuid.uuid4().hex}"
    settings = Settings.load(
        env={
            "STUDIO_DATA_DIR": str(tmp_path),
            "STORAGE_URL": f"s3://{s3_server.bucket}/{prefix}",
            "S3_ENDPOINT_URL": s3_server.endpoint_url,
            "AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        }
    )
    store = blob_store_for(settings.storage)
    assert isinstance(store, S3BlobStore) and store.prefix == prefix + "/"
    store.put("originals/a.png", b"png")
    raw = s3_server.client().get_object(Bucket=s3_server.bucket, Key=f"{prefix}/originals/a.png")
    assert raw["Body"].read() == b"png"
    assert s3_server.secret_key not in repr(store) + repr(settings)
    local = blob_store_for(Settings.load(env={"STUDIO_DATA_DIR": str(tmp_path)}).storage)
    assert isinstance(local, LocalBlobStore) and local.root == tmp_path


def _kept_item(keeper, prompt: str):
    from studio.records import GalleryItem
    from studio.simulator import render_png

    kept = keeper.keep_bytes(render_png(prompt, "1:1", "1K"), {"prompt": prompt})
    return GalleryItem(
        output_id=1, submission_id=1, creative_id="c0ffee12", prompt=prompt, aspect_ratio="1:1",
        resolution="1K", model="gpt-image-2", task_id=None, created_at=0.0, sha256=kept.sha256,
        width=kept.width, height=kept.height, bytes=1, url="", expire_at=0, favourite=False,
    )  # fmt: skip


def test_expired_exports_and_kits_leave_the_bucket_in_the_sweep_and_fresh_ones_stay(s3_server) -> None:
    from studio.blob_keys import EXPORTS, KITS, export_key
    from studio.export import EXPORT_LIFETIME_S, sweep_exports, write_zip
    from studio.images import ImageKeeper
    from studio.kit import KIT_LIFETIME_S, sweep_kits, write_kit

    store = _store(s3_server)
    keeper = ImageKeeper(store)
    items = [_kept_item(keeper, "a kite over the dunes")]
    now = time.time()  # the sweep's clock, injected: no waiting for an hour to pass
    fresh_export = export_key(write_zip(items, store, now=now - 60))
    fresh_kit = write_kit(items, ["square"], store, now=now - 60)
    # Written after the fresh ones (each write sweeps by its own clock, which is earlier).
    old_export = export_key(write_zip(items, store, now=now - EXPORT_LIFETIME_S - 60))
    old_kit = write_kit(items, ["square"], store, now=now - KIT_LIFETIME_S - 60)

    def in_bucket(under: str) -> set[str]:
        raw = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=store.prefix + under)
        return {o["Key"][len(store.prefix) :] for o in raw.get("Contents", [])}

    assert {old_export, fresh_export} <= in_bucket(EXPORTS)
    assert {old_kit.zip_key, old_kit.contact_key, fresh_kit.zip_key} <= in_bucket(KITS)
    assert sweep_exports(store, now=now) == 1
    assert sweep_kits(store, now=now) == 1
    assert in_bucket(EXPORTS) == {fresh_export}
    assert in_bucket(KITS) == {fresh_kit.zip_key, fresh_kit.contact_key}
    assert any(k.startswith("originals/") for k in store.keys())  # the images themselves stay
    assert sweep_exports(store, now=now) == 0 and sweep_kits(store, now=now) == 0


def _lifecycle(s3_server) -> list[dict]:
    try:
        return s3_server.client().get_bucket_lifecycle_configuration(Bucket=s3_server.bucket)["Rules"]
    except Exception as exc:  # no rules yet
        assert "NoSuchLifecycleConfiguration" in str(exc)
        return []


def test_the_bucket_expires_exports_and_kits_under_the_stores_prefix_keeping_other_rules(s3_server) -> None:
    other = {
        "ID": "team-logs-" + uuid.uuid4().hex[:6],
        "Filter": {"Prefix": "logs/"},
        "Status": "Enabled",
        "Expiration": {"Days": 30},
    }
    client = s3_server.client()
    client.put_bucket_lifecycle_configuration(
        Bucket=s3_server.bucket, LifecycleConfiguration={"Rules": [*_lifecycle(s3_server), other]}
    )
    a, b = _store(s3_server), _store(s3_server)
    assert a.expire_after(("exports/", "kits/"), days=1) is True
    assert a.expire_after(("exports/", "kits/"), days=1) is False  # already there: nothing written
    assert b.expire_after(("exports/", "kits/"), days=1) is True  # a second studio in the bucket
    rules = {r["Filter"]["Prefix"]: r for r in _lifecycle(s3_server)}
    for store in (a, b):
        for under in ("exports/", "kits/"):
            rule = rules[store.prefix + under]
            assert rule["Status"] == "Enabled" and rule["Expiration"] == {"Days": 1}
    assert rules["logs/"] == other  # the team's own rule is kept as it was
    assert not any(p.startswith(a.prefix + "originals") for p in rules)  # images never expire
    with pytest.raises(ValueError, match="at least 1 day"):
        a.expire_after(("exports/",), days=0)


def test_a_bucket_that_refuses_lifecycle_rules_is_one_log_line_and_the_start_goes_on(caplog) -> None:
    # SeaweedFS takes the rules (the test above); a store that answers NotImplemented is a
    # wire answer it cannot give, so botocore's Stubber gives it here.
    from botocore.stub import Stubber

    from studio import services as core

    client = s3_client(endpoint_url="http://127.0.0.1:9", access_key="k", secret_key="refused-secret")
    store = S3BlobStore("studio", "p", client)
    with Stubber(client) as stub:
        stub.add_client_error(
            "get_bucket_lifecycle_configuration", "NoSuchLifecycleConfiguration", http_status_code=404
        )
        stub.add_client_error("put_bucket_lifecycle_configuration", "NotImplemented", http_status_code=501)
        with pytest.raises(S3BlobError, match=r"lifecycle write .* failed \(NotImplemented\)"):
            store.expire_after(("exports/", "kits/"))
        stub.add_client_error(
            "get_bucket_lifecycle_configuration", "NoSuchLifecycleConfiguration", http_status_code=404
        )
        stub.add_client_error("put_bucket_lifecycle_configuration", "NotImplemented", http_status_code=501)
        caplog.set_level(logging.INFO, logger="studio.services")
        core._expire_downloads(store)  # returns: never stops the start
        stub.assert_no_pending_responses()
    [line] = [r.getMessage() for r in caplog.records if r.name == "studio.services"]
    assert "NotImplemented" in line and "sweeps remove them" in line and "\n" not in line
    assert "refused-secret" not in caplog.text
