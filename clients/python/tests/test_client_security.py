"""TLS and bearer tokens: the server on both with a certificate made here by ``openssl``; the clients
trust it from its file and send the token; without the token the call is ``unauthenticated``."""

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from spikeserve_client import AsyncClient, Client, HttpClient, SpikeserveError
from spikeserve_process import REPO, Server, ServerStartError, release_binary, started

TOKEN = "client-test-token-1"


@dataclass
class Secured:
    server: Server
    certificate: Path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key, tokens, models = folder / "server.crt", folder / "server.key", folder / "tokens", folder / "models"
    key_type = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
    names = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    subprocess.run(
        ["openssl", "req", "-x509", *key_type, *names, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    tokens.write_text(f"# test\n{TOKEN}\n")
    models.mkdir()
    (models / "digits").symlink_to(REPO / "models" / "digits")
    extra = ["--tls-cert", str(cert), "--tls-key", str(key), "--auth-tokens-file", str(tokens)]
    try:
        with started(release_binary(), models, extra) as running:
            yield Secured(running, cert)
    except ServerStartError as error:
        pytest.fail(str(error))


def image() -> np.ndarray:
    return np.zeros((1, 8, 8), dtype=np.float32)


def test_grpc_over_tls_with_a_token(secured: Secured) -> None:
    address = f"https://{secured.server.grpc_addr}"
    with Client(address, root_certificates=secured.certificate, token=TOKEN) as client:
        assert [m.name for m in client.list_models()] == ["digits"]
        assert client.infer("digits", image(), max_timesteps=2, threshold=1.0).timesteps == 2
        session = client.session("digits", threshold=1.0)
        session.send_frame(image()[0:1].reshape(1, 8, 8))
        session.close_input()
        assert session.final().timesteps == 1
    with Client(address, root_certificates=secured.certificate.read_bytes()) as anonymous:
        with pytest.raises(SpikeserveError) as error:
            anonymous.list_models()
        assert (error.value.code, error.value.grpc_status) == ("unauthenticated", "UNAUTHENTICATED")
    with Client(address, root_certificates=secured.certificate, token="wrong-token") as wrong:
        with pytest.raises(SpikeserveError) as error:
            wrong.infer("digits", image())
        assert error.value.code == "unauthenticated"

    async def run() -> None:
        async with AsyncClient(address, root_certificates=secured.certificate, token=TOKEN) as client:
            assert (await client.infer("digits", image(), max_timesteps=1, threshold=1.0)).timesteps == 1

    asyncio.run(run())


def test_http_over_tls_with_a_token(secured: Secured) -> None:
    url = f"https://{secured.server.http_addr}"
    with HttpClient(url, root_certificates=secured.certificate, token=TOKEN) as client:
        assert client.model("digits").timesteps == 8
        items = list(client.stream("digits", image(), threshold=1.0, max_timesteps=2))
        assert len(items) == 3
    with HttpClient(url, root_certificates=secured.certificate) as anonymous, pytest.raises(SpikeserveError) as error:
        anonymous.list_models()
    assert (error.value.code, error.value.http_status) == ("unauthenticated", 401)
