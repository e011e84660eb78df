"""TLS by configuration, with certificates this test makes (trustme: a CA, a server
certificate for localhost, a client certificate, and a second CA nobody trusts): Zenoh TLS and
mutual TLS through a Zenoh configuration file (``--zenoh-config``, the bridges run as
``xshm bridge`` processes), and ``rediss://`` against a ``redis-server`` that asks for client
certificates. The right configuration carries the record; a wrong CA, or no client certificate
where one is required, is refused: nothing crosses, and a Redis bridge says so at once."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xshm
from bridge_helpers import Procs, RedisServer, free_port, status_values, wait_for
from xshm import bridge

KEY = "test/tls"


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    """PEM files: ``ca``, ``server``/``server_key`` (localhost, 127.0.0.1), ``client``/
    ``client_key`` (signed by ``ca``), and ``other_ca`` (which signed nothing here)."""
    try:
        import trustme
    except ImportError:
        if os.environ.get("XSHM_REQUIRE_ALL") == "1":
            pytest.fail("XSHM_REQUIRE_ALL=1 but trustme (tests/requirements.txt) is missing")
        pytest.skip("trustme is not installed (pip install -r tests/requirements.txt)")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("xshm-mirror.test")
    files: dict[str, Any] = {
        "ca": ca.cert_pem,
        "other_ca": other.cert_pem,
        "server": server.cert_chain_pems[0],
        "server_key": server.private_key_pem,
        "client": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
    }
    paths = {}
    for name, blob in files.items():
        path = tmp_path / f"{name}.pem"
        blob.write_to_path(str(path))
        paths[name] = str(path)
    return paths


def _zenoh_config(path: Path, tls: dict[str, Any]) -> str:
    path.write_text(json.dumps({"transport": {"link": {"tls": tls}}}, indent=2))
    return str(path)


@pytest.mark.parametrize("mutual", [False, True])
def test_zenoh_tls_carries_the_record_and_refuses_a_wrong_ca(
    procs: Procs,
    seg_name: str,
    status_cleanup: Any,
    pki: dict[str, str],
    tmp_path: Path,
    mutual: bool,
) -> None:
    """An export listening on ``tls/localhost:PORT`` with its certificate; three mirrors: one
    trusting the CA (with a client certificate), one trusting another CA, and (mutual TLS) one
    with no client certificate. Only the first gets the record."""
    status_cleanup(f"bridge.export.{seg_name}")
    ep = f"tls/localhost:{free_port()}"
    server = {
        "root_ca_certificate": pki["ca"],
        "listen_certificate": pki["server"],
        "listen_private_key": pki["server_key"],
        "enable_mtls": mutual,
    }
    client_cert = {"connect_certificate": pki["client"], "connect_private_key": pki["client_key"]}
    mirrors = {
        "good": {"root_ca_certificate": pki["ca"], "enable_mtls": mutual, **client_cert},
        "wrong-ca": {"root_ca_certificate": pki["other_ca"], "enable_mtls": mutual, **client_cert},
    }
    if mutual:
        mirrors["no-client-cert"] = {"root_ca_certificate": pki["ca"], "enable_mtls": True}
    src = xshm.SharedMemoryManager.create(seg_name, shape=(4,), message_capacity=16)
    try:
        src.publish(values=np.arange(4.0), message="secret", counter=1)
        cfg = _zenoh_config(tmp_path / "export.json5", server)
        procs.bridge("export", seg_name, "--key", KEY, "--zenoh-config", cfg, "--listen", ep)
        into = {}
        for name, tls in mirrors.items():
            dst = into[name] = status_cleanup(f"{seg_name}-{name}")
            status_cleanup(f"bridge.mirror.{dst}")
            cfg = _zenoh_config(tmp_path / f"{name}.json5", tls)
            procs.bridge("mirror", KEY, "--into", dst, "--zenoh-config", cfg, "--connect", ep)
        good = wait_for(lambda: xshm.SharedMemoryManager.open(into["good"], readonly=True))
        wait_for(lambda: good.read().message == "secret", what="the record over TLS")
        good.close()
        time.sleep(2.0)  # the refused ones have had as long as the good one and more
        for name in mirrors:
            if name == "good":
                continue
            with pytest.raises(FileNotFoundError):
                xshm.SharedMemoryManager.open(into[name])
            status = status_values(f"bridge.mirror.{into[name]}")
            assert status["peers"] == 0 and status["messages"] == 0, (name, status)
    finally:
        src.close()


def _rediss(server: RedisServer, pki: dict[str, str], ca: str, client: bool) -> str:
    query = f"ssl_ca_certs={pki[ca]}"
    if client:
        query += f"&ssl_certfile={pki['client']}&ssl_keyfile={pki['client_key']}"
    return f"rediss://localhost:{server.port}/0?{query}"


def test_rediss_with_client_certificates_and_refusals(
    tmp_path: Path, seg_name: str, status_cleanup: Any, pki: dict[str, str]
) -> None:
    """A broker on TLS only, asking for client certificates: the right CA and certificate
    carry the record; a wrong CA, or no client certificate, is a PermissionError at once."""
    tls = ["--tls-cert-file", pki["server"], "--tls-key-file", pki["server_key"]]
    tls += ["--tls-ca-cert-file", pki["ca"], "--tls-auth-clients", "yes"]
    server = RedisServer(str(tmp_path), tls=tls)
    server.start()
    dst = status_cleanup(seg_name + "-m")
    status_cleanup(f"bridge.export.{seg_name}")
    status_cleanup(f"bridge.mirror.{dst}")
    src = xshm.SharedMemoryManager.create(seg_name, shape=(4,))
    try:
        for ca, client in (("other_ca", True), ("ca", False)):
            url = _rediss(server, pki, ca, client)
            with pytest.raises(PermissionError, match="TLS refused"):
                bridge.export(seg_name, key=KEY, engine="redis", url=url)
            with pytest.raises(PermissionError, match="TLS refused"):
                bridge.mirror(KEY, into=dst, engine="redis", url=url)
        src.publish(values=np.ones(4), message="over tls", counter=3)
        url = _rediss(server, pki, "ca", True)
        with (
            bridge.export(seg_name, key=KEY, engine="redis", url=url),
            bridge.mirror(KEY, into=dst, engine="redis", url=url) as mi,
        ):
            mi.wait_ready(10)
            with xshm.SharedMemoryManager.open(dst, readonly=True) as m:
                assert m.read().message == "over tls"
    finally:
        src.close()
        server.stop()
