"""Tor control (stem from trio) with a real ``tor`` that needs no network:
launching, authentication, bootstrap errors, a dying Tor, and the onion
service's key handling (ADD_ONION answers without a network)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest
import trio

from lnpmsg.transports.tor.address import parse_onion_address
from lnpmsg.transports.tor.control import (
    AttachedTor,
    BootstrapStatus,
    LaunchedTor,
    parse_bootstrap_phase,
)
from lnpmsg.transports.tor.errors import (
    OnionServiceError,
    TorAuthError,
    TorBootstrapError,
    TorControlError,
    TorNotFound,
)
from lnpmsg.transports.tor.onion import (
    KEY_TYPE,
    DescriptorPublication,
    OnionService,
    load_onion_key,
    save_onion_key,
)
from lnpmsg.transports.tor.process import find_tor, pick_free_ports

#: a Tor that can never bootstrap: its only directory authority is a closed
#: loopback port, so it never leaves 127.0.0.1 (and answers its control port)
DEAD_PORT = pick_free_ports(1)[0]
OFFLINE = [
    "TestingTorNetwork 1",
    "UseDefaultFallbackDirs 0",
    f"DirAuthority nowhere orport={DEAD_PORT} no-v2 v3ident={'A' * 40} 127.0.0.1:{DEAD_PORT} {'B' * 40}",
]
PASSWORD = "correct horse battery staple"


def hashed(password: str) -> str:
    out = subprocess.run(
        [find_tor(), "--hash-password", password],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def test_parse_bootstrap_phase() -> None:
    status = parse_bootstrap_phase(
        'NOTICE BOOTSTRAP PROGRESS=85 TAG=ap_conn_done SUMMARY="Connected to a relay to build circuits"'
    )
    assert status == BootstrapStatus(
        85, "ap_conn_done", "Connected to a relay to build circuits"
    )
    assert not status.done
    warn = parse_bootstrap_phase(
        'WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting \\"x\\"" WARNING="Connection refused" REASON=CONNECTREFUSED'
    )
    assert warn.summary == 'Connecting "x"'
    assert warn.warning == "Connection refused (reason: CONNECTREFUSED)"
    assert parse_bootstrap_phase(
        "NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY=Done"
    ).done
    with pytest.raises(TorControlError, match="unexpected bootstrap status"):
        parse_bootstrap_phase("garbage")


async def test_tor_not_installed(tmp_path: Path) -> None:
    with pytest.raises(TorNotFound, match="not found"):
        await LaunchedTor(tmp_path, tor_path=tmp_path / "no-such-tor").start()


async def test_bootstrap_timeout_is_a_clear_error(tmp_path: Path) -> None:
    seen: list[BootstrapStatus] = []
    tor = LaunchedTor(
        tmp_path, extra_torrc=OFFLINE, bootstrap_timeout=1.0, on_progress=seen.append
    )
    with pytest.raises(TorBootstrapError) as info:
        await tor.start()
    message = str(info.value)
    assert "did not finish bootstrapping within 1 s: stuck at " in message
    assert f"tor's output ({tor.log_path})" in message and "Bootstrapped 0%" in message
    assert seen and seen[0].progress < 100
    assert tor.returncode is not None  # the failed start stopped its tor


async def test_bad_torrc_line_quotes_tor_output(tmp_path: Path) -> None:
    tor = LaunchedTor(tmp_path, extra_torrc=["NoSuchOption 1"])
    with pytest.raises(
        TorBootstrapError, match="exited with code 1 before opening its control port"
    ) as info:
        await tor.start()
    assert "Unknown option 'NoSuchOption'" in str(info.value)


async def test_launched_tor_files_and_owned_exit(tmp_path: Path) -> None:
    async with LaunchedTor(
        tmp_path, extra_torrc=OFFLINE, bootstrap_timeout=None
    ) as tor:
        assert isinstance(tor, LaunchedTor)
        host, port = tor.socks_address
        assert host == "127.0.0.1" and port > 0
        assert tor.control_address[0] == "127.0.0.1"
        assert stat.S_IMODE(os.stat(tor.data_dir).st_mode) == 0o700
        assert await tor.controller.get_conf("TestingTorNetwork") == "1"
        # stem took ownership, so closing our control connection ends this tor
        assert await tor.controller.get_conf("__OwningControllerProcess") in (None, "")
    assert tor.returncode == 0
    assert "Owning controller connection has closed -- exiting now" in tor.log_tail()


async def test_password_auth(tmp_path: Path) -> None:
    async with LaunchedTor(
        tmp_path,
        extra_torrc=[*OFFLINE, f"HashedControlPassword {hashed(PASSWORD)}"],
        bootstrap_timeout=None,
    ) as tor:
        assert isinstance(tor, LaunchedTor)
        host, port = tor.control_address
        with pytest.raises(
            TorAuthError, match="rejected the password: wrong control-port password"
        ):
            await AttachedTor(
                host, port, password="wrong", bootstrap_timeout=None
            ).start()
        async with AttachedTor(
            host, port, password=PASSWORD, bootstrap_timeout=None
        ) as attached:
            assert attached.socks_address == tor.socks_address
            assert (await attached.controller.version()).startswith("0.")


async def test_cookie_auth(tmp_path: Path) -> None:
    async with LaunchedTor(
        tmp_path, extra_torrc=OFFLINE, bootstrap_timeout=None
    ) as tor:
        assert isinstance(tor, LaunchedTor)
        host, port = tor.control_address
        async with AttachedTor(
            host, port, cookie_path=tor.cookie_path, bootstrap_timeout=None
        ) as attached:
            assert attached.socks_address == tor.socks_address
            assert (
                await attached.controller.get_info("net/listeners/control")
                == f'"{host}:{port}"'
            )
        # Tor's own cookie path, from PROTOCOLINFO
        async with AttachedTor(host, port, bootstrap_timeout=None) as attached:
            assert attached.controller.is_alive
        wrong = tmp_path / "wrong_cookie"
        wrong.write_bytes(os.urandom(32))
        with pytest.raises(
            TorAuthError, match="rejected the authentication cookie from .*wrong_cookie"
        ):
            await AttachedTor(
                host, port, cookie_path=wrong, bootstrap_timeout=None
            ).start()
        wrong.write_bytes(b"short")
        with pytest.raises(TorAuthError, match="not a Tor authentication cookie"):
            await AttachedTor(
                host, port, cookie_path=wrong, bootstrap_timeout=None
            ).start()
        with pytest.raises(
            TorAuthError, match="cannot read Tor's authentication cookie"
        ):
            await AttachedTor(
                host, port, cookie_path=tmp_path / "missing", bootstrap_timeout=None
            ).start()
        with pytest.raises(TorAuthError, match="does not accept a password"):
            await AttachedTor(host, port, password="x", bootstrap_timeout=None).start()
        # the owner's connection survived all of that
        assert tor.controller.is_alive


async def test_nothing_on_control_port() -> None:
    (port,) = pick_free_ports(1)
    with pytest.raises(
        TorControlError,
        match=f"cannot connect to Tor's control port at 127.0.0.1:{port}",
    ):
        await AttachedTor("127.0.0.1", port).start()


async def test_tor_killed_while_running(tmp_path: Path) -> None:
    tor = LaunchedTor(tmp_path, extra_torrc=OFFLINE, bootstrap_timeout=None)
    await tor.start()
    assert tor.pid is not None
    os.kill(tor.pid, signal.SIGKILL)
    assert await tor.wait_exited() == -signal.SIGKILL
    with pytest.raises(TorControlError, match="lost the control connection"):
        with trio.fail_after(10):
            while True:  # stem notices the closed socket on its next read
                await tor.controller.get_info("version")
                await trio.sleep(0.05)
    await tor.aclose()
    await tor.aclose()


# -- onion service keys (ADD_ONION works without a network) --------------------


async def test_onion_key_file_gives_same_address(tmp_path: Path) -> None:
    key_file = tmp_path / "onion.key"
    async with LaunchedTor(
        tmp_path, extra_torrc=OFFLINE, bootstrap_timeout=None
    ) as tor:
        ctl = tor.controller
        first = OnionService(ctl, key_file, 9999)
        address = await first.start(wait_published=False)
        assert first.target == f"{address.hostname}:9735"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert key_file.read_text().startswith(KEY_TYPE + ":")
        assert address.service_id in (await ctl.get_info("onions/current")).split()
        await first.aclose()
        assert address.service_id not in (await ctl.get_info("onions/current")).split()
        again = OnionService(ctl, key_file, 9999, virtual_port=1234)
        assert await again.start(wait_published=False) == address
        assert again.target.endswith(".onion:1234")
        await again.aclose()
    assert parse_onion_address(address.hostname) == address


def test_onion_key_file_errors(tmp_path: Path) -> None:
    key_file = tmp_path / "onion.key"
    assert load_onion_key(key_file) is None
    blob = "A" * 86 + "=="  # 64 bytes of base64
    save_onion_key(key_file, blob)
    assert load_onion_key(key_file) == blob
    os.chmod(key_file, 0o644)
    assert load_onion_key(key_file) == blob
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    key_file.write_text("RSA1024:abcd\n")
    with pytest.raises(OnionServiceError, match="does not hold an ED25519-V3 key"):
        load_onion_key(key_file)
    key_file.write_text("ED25519-V3:not base64!\n")
    with pytest.raises(OnionServiceError, match="not base64"):
        load_onion_key(key_file)
    key_file.write_text("ED25519-V3:AAAA\n")
    with pytest.raises(OnionServiceError, match="3 bytes, expected 64"):
        load_onion_key(key_file)


def test_an_onion_key_that_does_not_fit_on_the_disk_is_refused_clearly_and_leaves_nothing(tmp_path: Path) -> None:
    """On a full disk the new key is not written: a clear error naming the file, no empty or
    temporary file left (the next start would take an empty key file for a corrupt one), and
    the key is written whole once there is room."""
    from lnpmsg.testing.disk import DiskFiller, small_disk

    blob = "A" * 86 + "=="
    with small_disk(tmp_path / "disk", size_kib=256) as disk:
        key_file = disk / "node" / "onion_key"
        filler = DiskFiller(disk)
        filler.fill()
        with pytest.raises(OnionServiceError, match=f"cannot write the onion key {key_file}: No space left on device"):
            save_onion_key(key_file, blob)
        assert not [p.name for p in (disk / "node").iterdir()]
        assert load_onion_key(key_file) is None
        filler.free()
        save_onion_key(key_file, blob)
        assert load_onion_key(key_file) == blob
        with pytest.raises(OnionServiceError, match="cannot write the onion key .*: File exists"):
            save_onion_key(key_file, "B" * 86 + "==")  # a key is made once, never replaced
        assert load_onion_key(key_file) == blob


def test_onion_service_must_point_at_loopback() -> None:
    with pytest.raises(OnionServiceError, match="loopback"):
        OnionService(None, "k", 9735, target_host="0.0.0.0")  # type: ignore[arg-type]


# -- descriptor publication tracking (sans-IO) ---------------------------------

SERVICE = "s" * 56
AUTH = "$" + "A" * 40 + "~auth0"
RELAY = "$" + "B" * 40 + "~relay1"


def test_publication_waits_for_every_descriptor_and_answer() -> None:
    # the sequence Tor 0.4.9 sends for one service and one HSDir
    pub = DescriptorPublication(SERVICE)
    pub.observe("CREATED", SERVICE, "UNKNOWN", "desc-current")
    pub.observe("CREATED", SERVICE, "UNKNOWN", "desc-next")
    pub.observe("CREATED", "other" * 11 + "x", "UNKNOWN", "desc-other")
    pub.observe("UPLOAD", SERVICE, AUTH, "desc-current")
    pub.observe("UPLOADED", SERVICE, AUTH, None)
    assert not pub.complete  # the next period's descriptor is not uploaded yet
    pub.observe("UPLOAD", SERVICE, AUTH, "desc-next")
    pub.observe("UPLOAD", SERVICE, RELAY, "desc-next")
    pub.observe("UPLOADED", SERVICE, AUTH.split("~")[0], None)
    assert not pub.complete  # relay1 has not answered
    pub.observe("UPLOADED", "other" * 11 + "x", RELAY, None)
    assert not pub.complete  # another service's answer does not count
    pub.observe("UPLOADED", SERVICE, RELAY, None)
    assert pub.complete
    assert "3 uploads: 3 succeeded, 0 failed, 0 unanswered" in pub.summary()


def test_publication_failure_is_not_ready_and_is_reported() -> None:
    pub = DescriptorPublication(SERVICE)
    pub.observe("CREATED", SERVICE, "UNKNOWN", "d1")
    pub.observe("UPLOAD", SERVICE, AUTH, "d1")
    pub.observe("UPLOAD", SERVICE, RELAY, "d1")
    pub.observe("UPLOADED", SERVICE, AUTH, None)
    pub.observe("FAILED", SERVICE, RELAY, None, "UPLOAD_REJECTED")
    assert not pub.complete
    assert "upload to HSDir " + "B" * 40 + " failed: UPLOAD_REJECTED" in pub.summary()
    # an answer nobody asked for changes nothing
    pub.observe("UPLOADED", SERVICE, "$" + "C" * 40, None)
    assert pub.uploaded == 1
