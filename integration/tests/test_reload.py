"""Config reload from disk ([server] watch_config, on by default): no signal is sent in these
tests. A config replaced on disk, a Kubernetes ConfigMap's `..data` symlink swap and a key file
changed in place all change key_id; a broken file keeps the running config."""

import os
import time

from conftest import keygen, local_config, v2_pb2


def key_id(p):
    return p.v2().Status(v2_pb2.StatusRequest(), timeout=5).key_id


def wait_for(check, what, p, timeout=20):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout}s:\n{p.logs()}"
        time.sleep(0.05)


def reloads(p, outcome):
    _, text = p.http("/metrics")
    for line in text.splitlines():
        if line.startswith(f'polykms_config_reloads_total{{outcome="{outcome}"}}'):
            return int(float(line.split()[-1]))
    return 0


def round_trip(p):
    seed = os.urandom(32)
    stub = p.v2()
    enc = stub.Encrypt(v2_pb2.EncryptRequest(plaintext=seed, uid="reload"), timeout=5)
    dec = stub.Decrypt(v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id, uid="reload",
                                             annotations=enc.annotations), timeout=5)
    assert dec.plaintext == seed
    return enc


def replace(path, text):
    """What an editor does on save: write a new file, rename it over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


def test_config_replaced_on_disk_without_a_signal_changes_key_id(workdir, plugins):
    ka, kb = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    p = plugins(workdir, local_config([ka, kb]))
    before = key_id(p)
    old = round_trip(p)
    replace(p.config, p.config.read_text().replace(f'["{ka}", "{kb}"]', f'["{kb}", "{ka}"]'))
    wait_for(lambda: key_id(p) != before, "key_id change after the config was replaced", p)
    assert reloads(p, "success") == 1
    assert '"trigger":"file change"' in p.logs()
    # Data written before the reload still decrypts, new data uses the new key.
    p.v2().Decrypt(v2_pb2.DecryptRequest(ciphertext=old.ciphertext, key_id=old.key_id, uid="old",
                                         annotations=old.annotations), timeout=5)
    assert round_trip(p).key_id == key_id(p)


def test_configmap_data_symlink_swap_reloads(workdir, plugins):
    """The layout kubelet makes for a mounted ConfigMap, and its atomic update."""
    cm = workdir / "cm"
    cm.mkdir()
    (cm / "..v1").mkdir()
    ka, kb = keygen(workdir / "a.key"), keygen(workdir / "b.key")
    os.symlink("..v1", cm / "..data")
    os.symlink("..data/config.toml", cm / "config.toml")
    p = plugins(workdir, local_config([ka, kb]), config_path=cm / "config.toml")
    before = key_id(p)
    (cm / "..v2").mkdir()
    (cm / "..v2" / "config.toml").write_text(
        (cm / "..v1" / "config.toml").read_text().replace(f'["{ka}", "{kb}"]', f'["{kb}", "{ka}"]'))
    os.symlink("..v2", cm / "..data_tmp")
    os.rename(cm / "..data_tmp", cm / "..data")
    (cm / "..v1" / "config.toml").unlink()
    (cm / "..v1").rmdir()
    wait_for(lambda: key_id(p) != before, "key_id change after the ..data swap", p)
    round_trip(p)
    # A second update is seen as well: the watch follows the new ..data.
    after = key_id(p)
    (cm / "..v3").mkdir()
    (cm / "..v3" / "config.toml").write_text((cm / "..v2" / "config.toml").read_text()
                                             .replace(f'["{kb}", "{ka}"]', f'["{ka}", "{kb}"]'))
    os.symlink("..v3", cm / "..data_tmp")
    os.rename(cm / "..data_tmp", cm / "..data")
    wait_for(lambda: key_id(p) == before, "key_id back after a second ..data swap", p)
    assert after != before
    assert reloads(p, "success") == 2


def test_key_file_changed_on_disk_reloads(workdir, plugins):
    """Files the config names are watched too: a key file rewritten in place (relative path,
    resolved against the config file's directory) changes key_id with no config change."""
    keygen(workdir / "k.key")
    p = plugins(workdir, local_config(["k.key"]))
    before = key_id(p)
    old = round_trip(p)
    keygen(workdir / "new.key")
    (workdir / "k.key").write_bytes((workdir / "new.key").read_bytes())
    wait_for(lambda: key_id(p) != before, "key_id change after the key file changed", p)
    assert reloads(p, "success") == 1
    assert old.key_id == before
    assert round_trip(p).key_id != before


def test_broken_file_on_disk_keeps_the_running_config(workdir, plugins):
    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key]))
    before = key_id(p)
    good = p.config.read_text()
    replace(p.config, good.replace("[encrypt]", "[encrypt\n"))
    wait_for(lambda: reloads(p, "failure") == 1, "a rejected reload", p)
    assert "reload rejected" in p.logs()
    assert key_id(p) == before
    round_trip(p)
    # A config that parses but names a missing key file is rejected the same way.
    replace(p.config, good.replace(str(key), str(workdir / "missing.key")))
    wait_for(lambda: reloads(p, "failure") == 2, "a second rejected reload", p)
    assert key_id(p) == before
    # ...and the file it names appearing later is noticed: the reload then succeeds.
    keygen(workdir / "missing.key")
    wait_for(lambda: key_id(p) != before, "the reload once the key file exists", p)
    assert reloads(p, "success") == 1
