"""The API over HTTPS (``FLEETWARD_API_TLS_CERT`` and ``FLEETWARD_API_TLS_KEY``): an agent
registers and heartbeats through the ingress over TLS, verified against the certificate's CA;
plain HTTP gets no answer on that port; one of the two settings alone is refused in one line."""

from __future__ import annotations

import ssl
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import trustme

from fleetward.services.config import Settings
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import Runtime
from tests.integration.api_harness import running_api
from tests.integration.test_ingress import INGRESS, agent_token, bearer


async def test_agents_check_in_over_https(rt: Runtime, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key))
    cert.cert_chain_pems[0].write_to_path(str(chain))
    for more in cert.cert_chain_pems[1:]:
        more.write_to_path(str(chain), append=True)
    settings = Settings.from_env({
        "FLEETWARD_HOME": str(rt.settings.home), "FLEETWARD_API_TLS_CERT": str(chain),
        "FLEETWARD_API_TLS_KEY": str(key),
    })  # fmt: skip
    tls = replace(rt, settings=replace(rt.settings, api_tls=settings.api_tls))
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    async with running_api(tls) as api:
        assert api.base.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(base_url=api.base, verify=trusted, timeout=30) as http:
            who = bearer(agent_token(rt, "tls-1"))
            registered = await http.post(f"{INGRESS}/register", headers=who, json={
                "name": "HTTPS agent", "owner": "ana@example.com", "team": "web"})  # fmt: skip
            assert registered.status_code == 200, registered.text
            beat = await http.post(f"{INGRESS}/heartbeat", headers=who, json={"message": "tls"})
            assert beat.status_code == 200, beat.text
        plain = api.base.replace("https://", "http://")
        async with httpx.AsyncClient(base_url=plain, timeout=10) as http:
            with pytest.raises(httpx.HTTPError):  # a TLS server answers no plain request
                await http.get("/healthz")


def test_one_tls_setting_alone_is_refused(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("-")
    for only in ("FLEETWARD_API_TLS_CERT", "FLEETWARD_API_TLS_KEY"):
        with pytest.raises(FleetwardError, match="set both"):
            Settings.from_env({"FLEETWARD_HOME": str(tmp_path), only: str(pem)})
    with pytest.raises(FleetwardError, match="is not a file"):
        Settings.from_env({"FLEETWARD_HOME": str(tmp_path), "FLEETWARD_API_TLS_CERT": str(pem),
                           "FLEETWARD_API_TLS_KEY": str(tmp_path / "missing.pem")})  # fmt: skip
