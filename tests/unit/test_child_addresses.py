"""Which binds a worker shares and what it asks the primary for
(``pycluster.child.addresses``, pure: no sockets, no processes)."""

from __future__ import annotations

import os
import socket

import pytest

from pycluster.child.addresses import BindQuery, classify, numeric_host, sockname

INET, INET6, UNIX = socket.AF_INET, socket.AF_INET6, socket.AF_UNIX
STREAM, DGRAM = socket.SOCK_STREAM, socket.SOCK_DGRAM


def options(reuseport: int = 0, v6only: int = 0, fail: bool = False):
    """A fake ``sock.getsockopt`` reading the two options classify asks for."""
    asked = []

    def getsockopt(level: int, opt: int) -> int:
        asked.append((level, opt))
        if opt == socket.SO_REUSEPORT and level == socket.SOL_SOCKET:
            if fail:
                raise OSError("no such option")
            return reuseport
        if (level, opt) == (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
            return v6only
        raise AssertionError(f"unexpected getsockopt({level}, {opt})")

    getsockopt.asked = asked  # type: ignore[attr-defined]
    return getsockopt


def untouched(level: int, opt: int) -> int:
    raise AssertionError("a unix socket's options are not read")


# -- shared -------------------------------------------------------------------------

def test_tcp4_bind_is_shared_with_its_numeric_address():
    query = classify(INET, STREAM, ("127.0.0.1", 8000), options())
    assert query == BindQuery("127.0.0.1", 8000, 4, None)
    assert query.message(2) == {"act": "query", "address": "127.0.0.1", "port": 8000, "address_type": 4,
                                "fd": None, "v6only": None, "index": 2}


@pytest.mark.parametrize("family, host, wildcard", [(INET, "", "0.0.0.0"), (INET6, "", "::"),
                                                   (INET, b"", "0.0.0.0"), (INET, None, "0.0.0.0")])
def test_empty_host_is_the_wildcard(family, host, wildcard):
    assert classify(family, STREAM, (host, 0), options()).address == wildcard


def test_tcp6_carries_the_sockets_v6only_option():
    query = classify(INET6, STREAM, ("::1", 9000, 0, 0), options(v6only=1))
    assert (query.address, query.port, query.address_type, query.v6only) == ("::1", 9000, 6, True)
    assert classify(INET6, STREAM, ("::", 9000), options(v6only=0)).v6only is False


@pytest.mark.parametrize("family, atype", [(INET, "udp4"), (INET6, "udp6")])
def test_udp_binds_are_shared_as_udp(family, atype):
    assert classify(family, DGRAM, ("", 5353), options()).address_type == atype


def test_bytes_host_and_string_port_are_normalised():
    query = classify(INET, STREAM, (b"10.0.0.1", "81"), options())
    assert (query.address, query.port) == ("10.0.0.1", 81)


def test_host_names_go_through_the_resolver():
    calls = []

    def resolve(host: str, family: int, stype: int) -> str:
        calls.append((host, family, stype))
        return "192.0.2.7"

    assert classify(INET, DGRAM, ("example.test", 1), options(), resolve).address == "192.0.2.7"
    assert calls == [("example.test", INET, DGRAM)]


def test_unix_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    query = classify(UNIX, STREAM, "app.sock", untouched)
    assert query == BindQuery(str(tmp_path / "app.sock"), None, -1)
    assert "v6only" not in query.message(0)
    assert classify(UNIX, STREAM, os.fsencode(tmp_path / "b.sock"), untouched).address == str(tmp_path / "b.sock")


@pytest.mark.parametrize("name", ["\0abstract", b"\0abstract"])
def test_abstract_unix_names_are_shared_as_they_are(name):
    assert classify(UNIX, STREAM, name, untouched) == BindQuery("\0abstract", None, -1)


def test_reading_so_reuseport_may_fail_and_the_bind_is_still_shared():
    assert classify(INET, STREAM, ("127.0.0.1", 1), options(fail=True)) is not None


# -- left alone --------------------------------------------------------------------

def test_app_set_so_reuseport_is_left_alone():
    getsockopt = options(reuseport=1)
    assert classify(INET, STREAM, ("0.0.0.0", 8000), getsockopt) is None
    assert classify(INET6, DGRAM, ("::", 8000), options(reuseport=1)) is None
    assert getsockopt.asked == [(socket.SOL_SOCKET, socket.SO_REUSEPORT)]


@pytest.mark.parametrize("name", ["", b""])
def test_unix_autobind_is_left_alone(name):
    assert classify(UNIX, STREAM, name, untouched) is None


@pytest.mark.parametrize("family, stype, address", [
    (UNIX, DGRAM, "/tmp/dgram.sock"),                 # unix datagram sockets
    (INET, socket.SOCK_RAW, ("0.0.0.0", 0)),          # other socket types
    (INET, socket.SOCK_SEQPACKET, ("0.0.0.0", 0)),
    (INET, STREAM, "0.0.0.0:80"),                     # no (host, port) tuple
    (INET, STREAM, ("0.0.0.0",)),
])
def test_other_binds_are_left_alone(family, stype, address):
    assert classify(family, stype, address, options()) is None


# -- helpers -------------------------------------------------------------------------

def test_numeric_host_keeps_numeric_and_scoped_addresses():
    assert numeric_host("fe80::1%lo", INET6, STREAM) == "fe80::1%lo"
    assert numeric_host("10.1.2.3", INET, STREAM) == "10.1.2.3"
    assert numeric_host("localhost", INET, STREAM) == "127.0.0.1"


def test_key_leaves_out_the_index_and_v6only():
    assert BindQuery("::", 80, 6, True).key == ("::", 80, 6, None) == BindQuery("::", 80, 6, False).key


def test_sockname_has_the_shape_getsockname_gives_for_the_family():
    address = {"address": "::1", "port": 8080, "address_type": 6}
    assert sockname(INET6, address) == ("::1", 8080, 0, 0)
    assert sockname(INET, {"address": "127.0.0.1", "port": 81}) == ("127.0.0.1", 81)
    assert sockname(UNIX, {"address": "/run/app.sock", "port": None}) == "/run/app.sock"
    assert sockname(UNIX, {}) == ""
