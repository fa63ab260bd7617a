"""cluster.storage on the local disk, and a full disk: a journal write that fails (ENOSPC, injected
through the storage module) is refused cleanly, never acknowledged, said in the status, and the
level server accepts pushes again once space returns."""

from __future__ import annotations

import errno

import pytest
import torch

from cluster.config import ServerConfig
from cluster.frames import FrameLog
from cluster.level.core import LevelCore
from cluster.level.protocol import RejectCode
from cluster.level.records import audit
from cluster.storage import NoSpace, Storage, is_uri
from cluster.store import LevelStore
from tests.cluster.level.test_core import SHAPES, grad


def test_locations_and_local_files(tmp_path):
    assert is_uri("s3://b/p") and is_uri("gs://b") and not is_uri(tmp_path) and not is_uri("file:///x")
    storage = Storage(tmp_path / "root")
    storage.makedirs("a")
    storage.write_atomic("a/x.json", b"{}")
    assert storage.read_bytes("a/x.json") == b"{}" and storage.listing() == {"a": None}
    assert storage.listing("a") == {"x.json": 2} and storage.child("a").exists("x.json")
    log = FrameLog(storage, "a/log")
    log.append(b"12345")
    log.append(b"678")
    assert log.read() == b"12345678"
    log.cut(5)
    assert log.read() == b"12345"
    storage.remove_tree("a")
    assert not storage.exists("a") and storage.listing("a") == {}
    with pytest.raises(ValueError, match="no filesystem"):
        Storage("nosuchscheme://x/y")


def test_listing_skips_an_entry_removed_while_it_is_listed(tmp_path, monkeypatch):
    """Another process's temp file (an atomic write of cursor.json) can vanish between the directory's
    listing and its stat: the listing leaves it out instead of failing the caller (a Learn call did)."""
    storage = Storage(tmp_path)
    storage.write_atomic("kept.json", b"{}")
    listed = list(tmp_path.iterdir())
    gone = tmp_path / ".cursor.json.123.tmp"  # listed, then renamed away before its stat
    monkeypatch.setattr(type(tmp_path), "iterdir", lambda self: iter([*listed, gone]))
    assert storage.listing() == {"kept.json": 2}


def test_a_failed_append_is_cut_back_off(tmp_path):
    storage = Storage(tmp_path)
    storage.append("j.log", b"whole")

    class Half:  # the disk fills in the middle of the write: half the bytes land, then ENOSPC
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = open

    def half_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        if "a" in mode:
            class Wrapped:
                def __enter__(s):
                    return s

                def __exit__(s, *exc):
                    f.close()

                def tell(s):
                    return f.tell()

                def truncate(s, n):
                    return f.truncate(n)

                def write(s, data):
                    return Half(f).write(data)
            return Wrapped()
        return f

    import builtins

    builtins.open, saved = half_open, builtins.open
    try:
        with pytest.raises(OSError):
            storage.append("j.log", b"0123456789")
    finally:
        builtins.open = saved
    assert storage.read_bytes("j.log") == b"whole"  # no half record for the next append to follow


def test_disk_full_refuses_the_push_keeps_the_server_up_and_recovers(tmp_path):
    storage, full = Storage(tmp_path / "level"), NoSpace(full=False)
    storage.inject(full)
    server = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=2, checkpoint_every=1), store_dir=storage)
    assert server.push("a", 1, 0, grad(1), first_step=1, last_step=5).accepted
    full.full = True
    out = server.push("a", 2, server.version, grad(2), first_step=6, last_step=10)
    assert not out.accepted and out.code is RejectCode.STORAGE and "No space left" in out.reason
    status = server.status()
    assert "journal write failed" in status.to_dict()["storage_error"] and status.counters.accepted == 1
    assert status.counters.rejected == {"storage": 1} and server.covered("a").last == 5 and server.seen("a") == 1
    assert "storage_error" in status.to_dict() and full.failures == 1
    # nothing of the refused push reached the journal: a restart holds the acknowledged push alone
    again = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=2, checkpoint_every=1),
                      store_dir=tmp_path / "level")
    assert again.seen("a") == 1 and len(again.pending) == 1
    full.full = False  # space is back: the same push (the client retries) is taken, and the merge checkpoints
    retry = server.push("a", 2, server.version, grad(2), first_step=6, last_step=10)
    assert retry.accepted and "storage_error" not in server.status().to_dict()
    assert server.version == 1 and LevelStore(tmp_path / "level", config_hash="").latest_valid().version == 1
    report = audit(tmp_path / "level", "")
    assert report.violations == [] and report.coverage["a"].last == 10


def test_a_failed_periodic_checkpoint_is_reported_not_fatal(tmp_path):
    storage, full = Storage(tmp_path / "level"), NoSpace(full=False)
    storage.inject(full)
    server = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=1, checkpoint_every=1), store_dir=storage)
    assert server.push("a", 1, 0, grad(1)).accepted  # merge + checkpoint at version 1

    def journal_only(op, name):  # the journal still fits, a checkpoint directory does not
        if "ckpt" in name:
            raise OSError(errno.ENOSPC, "No space left on device")

    storage.inject(journal_only)
    assert server.push("a", 2, 1, grad(2)).accepted  # journaled, so acknowledged; its checkpoint failed
    assert "checkpoint at version 2 failed" in server.status().to_dict()["storage_error"]
    storage.inject(None)
    again = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=1, checkpoint_every=1),
                      store_dir=tmp_path / "level")
    assert again.version == 2 and torch.equal(again.B["m.q"], server.B["m.q"])


def test_run_dir_places_stores_on_run_storage_and_resumes_from_its_uri(tmp_path):
    from swarm.config import load_config, to_yaml
    from swarm.rundir import RunDir, new_run_dir

    nfs = tmp_path / "nfs"
    cfg = load_config("swarm", [f"run.storage={nfs}", f"run.out_dir={tmp_path / 'runs'}", "run.name=r"])
    run = new_run_dir(cfg.run.out_dir, cfg.run.name)
    assert run.level_store("swarm/red") == run.path / "levels" / "swarm/red"  # no config yet: the old layout
    run.config.write_text(to_yaml(cfg))
    assert run.level_store("swarm/red") == nfs / "r" / "levels" / "swarm/red"
    assert run.agent_store("t/r/a1") == nfs / "r" / "agents" / "t/r/a1" and (nfs / "r" / "config.yaml").is_file()

    uri = "memory://swarm-h20/runs"  # fsspec's in-process filesystem: a URI store without a server
    cfg = load_config("swarm", [f"run.storage={uri}", "run.storage_options={skip_instance_cache: false}",
                                f"run.out_dir={tmp_path / 'runs'}", "run.name=m"])
    run = new_run_dir(cfg.run.out_dir, cfg.run.name)
    run.config.write_text(to_yaml(cfg))
    assert run.level_store("swarm/red") == f"{uri}/m/levels/swarm/red?skip_instance_cache=false"
    again = RunDir(f"{uri}/m")  # another machine: only the URI
    assert again.remote and not again.is_run()
    (run.path / "config.yaml").unlink()
    assert again.require_run().path == tmp_path / "runs" / "m" and again.is_run()
    assert again.level_store("swarm/red") == run.level_store("swarm/red")
    with pytest.raises(FileNotFoundError, match="not a run's stores"):
        RunDir(f"{uri}/nothing").require_run()
