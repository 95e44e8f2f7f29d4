"""The on-disk kernel plan cache: never over a file that is not one, merged under a lock, entries validated."""
import json
import multiprocessing
import threading
import time

import pytest

from captum_smocam import kernel_choice
from captum_smocam.kernel_choice import plan_for
from captum_smocam.kernels import KernelPlan

ONEDNN = KernelPlan("onednn+rowwise", "onednn", "rowwise", False, 1)
KEY = "0" * 40 + "|first"


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    path = tmp_path / "plans.json"
    monkeypatch.setenv(kernel_choice.PLAN_CACHE_ENV, str(path))
    monkeypatch.setattr(kernel_choice, "_WARNED", set())
    kernel_choice._PLANS.clear()
    yield path
    kernel_choice._PLANS.clear()


@pytest.mark.parametrize("content", [b"subject,age\nsub-01,71\n", b'["a list"]', b'{"name": "my settings"}',
                                     b"\x00\x01binary"])
def test_a_file_that_is_not_a_plan_cache_is_never_touched(cache, content):
    """Before: SMOCAM_PLAN_CACHE naming a user's CSV silently replaced it with JSON."""
    cache.write_bytes(content)
    with pytest.warns(UserWarning, match="not a kernel plan cache"):
        plan, source = plan_for(KEY, lambda: ONEDNN)
    assert (plan, source) == (ONEDNN, "chosen")
    with pytest.warns(UserWarning, match="left untouched"):
        kernel_choice.clear_plan_cache(disk=True)
    assert cache.read_bytes() == content


def test_a_cache_in_a_new_folder_is_written(tmp_path, monkeypatch):
    path = tmp_path / "new" / "plans.json"
    monkeypatch.setenv(kernel_choice.PLAN_CACHE_ENV, str(path))
    kernel_choice._PLANS.clear()
    plan_for(KEY, lambda: ONEDNN)
    assert KEY in json.loads(path.read_text())
    kernel_choice._PLANS.clear()


def test_the_cache_is_marked_and_read_back(cache):
    plan_for(KEY, lambda: ONEDNN)
    data = json.loads(cache.read_text())
    assert data[kernel_choice.CACHE_MARKER] == kernel_choice.CACHE_FORMAT and KEY in data
    kernel_choice._PLANS.clear()
    assert plan_for(KEY, lambda: 1 / 0) == (ONEDNN, "disk")
    kernel_choice.clear_plan_cache(disk=True)
    assert not cache.exists()


@pytest.mark.parametrize("field,value", [("min_rows", "abc"), ("min_rows", 0), ("min_rows", True), ("conv", "gpu"),
                                         ("channels_last", "yes"), ("seconds", {"stock": "fast"}), ("name", None)])
def test_an_invalid_entry_is_ignored_with_a_warning(cache, field, value):
    """Before: an entry with "min_rows": "abc" was used and failed later with a TypeError."""
    entry = {**ONEDNN.to_json(), field: value}
    cache.write_text(json.dumps({KEY: entry}))
    with pytest.warns(UserWarning, match=f"invalid entry.*{field}"):
        plan, source = plan_for(KEY, lambda: ONEDNN)
    assert (plan, source) == (ONEDNN, "chosen")
    assert json.loads(cache.read_text())[KEY] == ONEDNN.to_json()  # replaced by a valid one


def test_writes_wait_for_the_lock_and_merge(cache):
    """Before: a writer read, changed and wrote the file without a lock, so a concurrent writer's entry was lost."""
    import fcntl
    import os

    other = "1" * 40 + "|first"
    fd = os.open(f"{cache}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process is writing
    writer = threading.Thread(target=plan_for, args=(KEY, lambda: ONEDNN))
    writer.start()
    time.sleep(0.5)
    assert writer.is_alive() and not cache.exists()  # waits for the lock
    cache.write_text(json.dumps({kernel_choice.CACHE_MARKER: 1, other: ONEDNN.to_json()}))  # the other's entry
    os.close(fd)
    writer.join(10)
    assert set(json.loads(cache.read_text())) == {kernel_choice.CACHE_MARKER, KEY, other}


def _write_entries(first):
    for i in range(8):
        kernel_choice._write_disk(f"{first + i:040x}|first", kernel_choice.STOCK)


def test_concurrent_processes_lose_no_entry(cache):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_entries, args=(8 * p,)) for p in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    assert len(json.loads(cache.read_text())) == 1 + 32
