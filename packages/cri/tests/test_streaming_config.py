"""The ``stream_*`` settings of the CRI table and the server they describe."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, cast

import pytest

from pycontainerd.config.errors import ConfigError
from pycontainerd.cri.config import DEFAULT_CONFIG, CriConfig
from pycontainerd.cri.streaming import testing as st
from pycontainerd.cri.streaming_handler import make_server


def _config(**raw: object) -> CriConfig:
    return CriConfig.from_mapping({**DEFAULT_CONFIG, **raw})


def test_defaults_are_containerds() -> None:
    c = _config()
    assert (c.stream_server_address, c.stream_server_port) == ("127.0.0.1", "0")
    assert c.stream_idle_timeout == 4 * 3600
    assert not c.enable_tls_streaming
    assert (c.tls_cert_file, c.tls_key_file) == ("", "")


def test_idle_timeout_is_a_go_duration() -> None:
    assert _config(stream_idle_timeout="1h30m").stream_idle_timeout == 5400
    assert _config(stream_idle_timeout="0s").stream_idle_timeout == 0
    with pytest.raises(ConfigError, match="stream_idle_timeout"):
        _config(stream_idle_timeout="soon")
    with pytest.raises(ConfigError, match="stream_idle_timeout"):
        _config(stream_idle_timeout="-1s")


def test_key_pair_is_read() -> None:
    c = _config(x509_key_pair_streaming={"tls_cert_file": "c.pem", "tls_key_file": "k.pem"})
    assert (c.tls_cert_file, c.tls_key_file) == ("c.pem", "k.pem")


async def test_server_follows_the_settings() -> None:
    none = cast("Any", None)  # the handler's collaborators are not reached here
    plain = make_server(_config(stream_idle_timeout="0s"), none, none, none)
    assert plain.idle_timeout is None
    await plain.start()
    try:
        assert plain.port != 0
        assert plain.base_url == f"http://127.0.0.1:{plain.port}"
    finally:
        await plain.close()
    secure = make_server(_config(enable_tls_streaming=True), none, none, none)
    await secure.start()
    try:
        assert secure.base_url.startswith("https://127.0.0.1:")
        client = ssl.create_default_context()
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        # An https URL with an unknown token: the TLS handshake works, the token does not.
        with pytest.raises(ConnectionRefusedError, match="404"):
            await asyncio.wait_for(
                st.spdy_exec(secure.base_url + "/exec/nosuch", ssl_context=client), 10
            )
    finally:
        await secure.close()


def test_empty_address_is_the_hosts() -> None:
    none = cast("Any", None)
    server = make_server(_config(stream_server_address=""), none, none, none)
    assert server.host
    assert server.base_url.startswith(f"http://{server.host}:")
