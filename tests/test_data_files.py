"""Everything the studio writes in its data folder is owner-only (folders 0700, files 0600)."""

from __future__ import annotations

import os
import stat

from studio import services as core
from studio.callbacks import load_or_create_token
from studio.config import Settings
from studio.export import write_zip
from studio.kit import write_kit
from studio.models import TaskRequest
from tests.support import wait_for


def test_the_data_folder_and_every_file_in_it_are_owner_only_after_a_generation(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)  # as an older studio (or `mkdir`) left it
    old_umask = os.umask(0o022)  # the usual default, whatever ran before in this process
    core.shutdown()
    try:
        s = core.boot(
            Settings.load(
                env={
                    "STUDIO_DATA_DIR": str(data),
                    "STUDIO_SIM_MIN_DURATION": "0.1",
                    "STUDIO_SIM_MAX_DURATION": "0.2",
                }
            )
        )
        [sid] = s.tracker.submit([TaskRequest('A poster saying "HELLO"', "1:1", "1K")])
        wait_for(lambda: any(o.state == "kept" for o in s.store.outputs_for([sid]).get(sid, [])))
        items = s.store.creative_items(s.store.submission(sid).creative_id)
        write_zip(items, s.blobs)
        write_kit(items, ["square"], s.blobs)
        load_or_create_token(data)
        modes = {
            str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in [data, *data.rglob("*")]
        }
    finally:
        core.shutdown()
        os.umask(old_umask)
    names = set(modes)
    for expected in ("studio.db", "studio.db-wal", "studio.db-shm", ".studio.lock", "callback-token"):
        assert f"data/{expected}" in names
    assert any(n.startswith("data/images/") and n.endswith(".png") for n in names)
    assert any(n.startswith("data/images/") and n.endswith(".webp") for n in names)  # thumbnails
    assert any(n.startswith("data/images/exports/") for n in names)
    assert any(n.startswith("data/images/kits/") for n in names)
    exposed = {n: oct(m) for n, m in modes.items() if m & 0o077}
    assert exposed == {}
