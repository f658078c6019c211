"""The command line: exit codes, keygen, check, version."""

import os
import stat
import subprocess

from conftest import BIN, keygen, local_config


def run(*args, **kw):
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=30, **kw)


def test_bad_config_exits_64_naming_the_field(workdir):
    key = keygen(workdir / "k.key")
    cases = {
        "sokcet": local_config([key]).replace("socket =", "sokcet ="),
        "encrypt.with[0]": local_config([key]).replace('with = ["local"]', 'with = ["nope"]'),
        "status_version": local_config([key], status_version="v3"),
        "key_files": local_config([str(workdir / "missing.key")]),
    }
    for field, text in cases.items():
        cfg = workdir / "bad.toml"
        cfg.write_text(text.replace("@SOCKET@", str(workdir / "s.sock")).replace("@HTTP@", ""))
        for cmd in ("serve", "check"):
            r = run(cmd, "--config", str(cfg))
            assert r.returncode == 64, (field, cmd, r.stderr)
            assert field in r.stderr, (field, r.stderr)
    r = run("serve", "--config", str(workdir / "nope.toml"))
    assert r.returncode == 64


def test_world_readable_key_is_a_config_error(workdir):
    key = keygen(workdir / "k.key")
    os.chmod(key, 0o644)
    cfg = workdir / "c.toml"
    cfg.write_text(local_config([key]).replace("@SOCKET@", str(workdir / "s.sock")).replace("@HTTP@", ""))
    r = run("check", "--config", str(cfg))
    assert r.returncode == 64 and "chmod 600" in r.stderr


def test_keygen_writes_0600_and_refuses_to_overwrite(workdir):
    out = workdir / "sub" / "new.key"
    assert run("keygen", "--out", str(out)).returncode == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert len(out.read_bytes()) == 32
    before = out.read_bytes()
    r = run("keygen", "--out", str(out))
    assert r.returncode != 0
    assert out.read_bytes() == before


def test_check_prints_key_versions_and_the_key_id_the_server_reports(workdir, plugins):
    from conftest import v2_pb2

    key = keygen(workdir / "k.key")
    p = plugins(workdir, local_config([key]))
    r = run("check", "--config", str(p.config))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "key version: local:" in r.stdout
    # The module it ran on, first (docs/fips.md): the FIPS build names the FIPS module.
    from conftest import FIPS

    module = r.stdout.splitlines()[0]
    assert module.startswith("cryptographic module: AWS-LC FIPS " if FIPS else "cryptographic module: AWS-LC "), module
    key_id = p.v2().Status(v2_pb2.StatusRequest(), timeout=5).key_id
    assert f"key_id: {key_id}" in r.stdout


def test_version_names_the_git_revision_and_the_cryptographic_module():
    import re

    from conftest import FIPS, ROOT

    r = run("version")
    assert r.returncode == 0 and r.stdout.startswith("polykms ")
    m = re.fullmatch(r"polykms (\S+) \(git revision (\S+)\)\ncryptographic module: (.*)\n", r.stdout)
    assert m, r.stdout
    if FIPS:
        assert re.fullmatch(r"AWS-LC FIPS \S+ \(FIPS mode\) \(FIPS build, FIPS 140-3 module branch \d+\)", m.group(3)), r.stdout
    else:
        assert re.fullmatch(r"AWS-LC \S+ \(not a FIPS build\)", m.group(3)), r.stdout
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0 and not os.environ.get("POLYKMS_GIT_REVISION"):
        assert m.group(2) == head.stdout.strip()


def test_example_local_config_works_from_a_clean_checkout(tmp_path):
    # configs/local.toml creates its dev key on first use; check it round-trips.
    from conftest import ROOT

    r = run("check", "--config", str(ROOT / "configs" / "local.toml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_unknown_flags_are_usage_errors_64_and_help_is_0():
    assert run("serve", "--bogus").returncode == 64
    assert run("serve").returncode == 64  # --config missing
    assert run("--help").returncode == 0
    assert run("--version").returncode == 0
