"""Mutual TLS and token files, end to end: a real server that requires client certificates
(or tokens), and the client and CLI presenting them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stad.client import AsyncClient, Client, Unauthenticated, Unavailable
from stad.client.cli import main
from tests.certs import Authority, Pem


@dataclass(frozen=True)
class Mtls:
    target: str
    ca: Pem
    trusted: Pem  # a client certificate signed by the server's client CA
    stranger: Pem  # one signed by a CA the server does not know


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mtls]:
    from stad.server.embedded import EmbeddedServer
    from stad.server.settings import Settings

    directory = tmp_path_factory.mktemp("certs")
    ca = Authority(directory, "stad-ca")
    other = Authority(directory, "other-ca")
    server_pem = ca.issue("server", server=True)
    model_dir = tmp_path_factory.mktemp("mtls-models")
    settings = Settings(
        model_dir=model_dir, tls_cert=server_pem.cert, tls_key=server_pem.key, client_ca=ca.pem.cert
    )
    with EmbeddedServer(model_dir, device="cpu", settings=settings) as embedded:
        yield Mtls(
            embedded.target, ca.pem, ca.issue("alice", server=False), other.issue("mallory", server=False)
        )


def test_a_trusted_client_certificate_is_let_in(mtls: Mtls) -> None:
    with Client(
        mtls.target, tls=mtls.ca.cert, client_cert=mtls.trusted.cert, client_key=mtls.trusted.key, retries=0
    ) as client:
        assert client.health().status == "SERVING"
        assert client.models() == []


async def test_the_async_client_presents_its_certificate(mtls: Mtls) -> None:
    async with AsyncClient(
        mtls.target, tls=mtls.ca.cert, client_cert=mtls.trusted.cert, client_key=mtls.trusted.key, retries=0
    ) as client:
        assert await client.models() == []


@pytest.mark.parametrize("who", ["stranger", "nobody"])
def test_an_unknown_ca_or_no_certificate_is_refused(mtls: Mtls, who: str) -> None:
    pem = mtls.stranger if who == "stranger" else None
    with (
        Client(
            mtls.target,
            tls=mtls.ca.cert,
            client_cert=pem.cert if pem else None,
            client_key=pem.key if pem else None,
            retries=0,
            timeout_s=10,
        ) as client,
        pytest.raises(Unavailable),
    ):
        client.health()


def test_the_certificate_can_come_from_the_environment(mtls: Mtls, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAD_CLIENT_CERT", str(mtls.trusted.cert))
    monkeypatch.setenv("STAD_CLIENT_KEY", str(mtls.trusted.key))
    with Client(mtls.target, tls=mtls.ca.cert, retries=0) as client:
        assert client.health().status == "SERVING"


def test_a_client_certificate_without_tls_is_refused_up_front(mtls: Mtls) -> None:
    with pytest.raises(ValueError, match="need TLS"):
        Client(mtls.target, client_cert=mtls.trusted.cert, client_key=mtls.trusted.key)
    with pytest.raises(ValueError, match="together"):
        Client(mtls.target, tls=mtls.ca.cert, client_cert=mtls.trusted.cert)


def test_the_cli_presents_a_client_certificate(
    mtls: Mtls, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STAD_CLIENT_CERT", raising=False)
    monkeypatch.delenv("STAD_CLIENT_KEY", raising=False)
    connection = ["--server", mtls.target, "--ca-cert", str(mtls.ca.cert), "--timeout", "10"]
    certificate = ["--client-cert", str(mtls.trusted.cert), "--client-key", str(mtls.trusted.key)]
    assert main([*connection, *certificate, "models", "list"]) == 0
    capsys.readouterr()
    assert main([*connection, "models", "list"]) == 1
    assert "Unavailable" in capsys.readouterr().err
    plain = ["--server", mtls.target, *certificate, "models", "list"]
    assert main(plain) == 2
    assert "--client-cert and --client-key need --tls or --ca-cert" in capsys.readouterr().err


def test_the_cli_reads_its_token_from_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stad.server.embedded import EmbeddedServer
    from stad.server.settings import Settings

    monkeypatch.delenv("STAD_TOKEN", raising=False)
    server_tokens = tmp_path / "server-tokens"
    server_tokens.write_text("old\nnew\n")
    settings = Settings(model_dir=tmp_path / "models", token_file=server_tokens)
    client_token = tmp_path / "client-token"
    client_token.write_text("new\n")
    with EmbeddedServer(tmp_path / "models", device="cpu", settings=settings) as embedded:
        connection = ["--server", embedded.target, "--timeout", "10"]
        assert main([*connection, "--token-file", str(client_token), "models", "list"]) == 0
        monkeypatch.setenv("STAD_TOKEN_FILE", str(client_token))
        assert main([*connection, "models", "list"]) == 0
        monkeypatch.delenv("STAD_TOKEN_FILE")
        capsys.readouterr()
        assert main([*connection, "models", "list"]) == 1
        assert "Unauthenticated" in capsys.readouterr().err
        assert main([*connection, "--token-file", str(tmp_path / "missing"), "models", "list"]) == 2
        assert "cannot read the token file" in capsys.readouterr().err
        with Client(embedded.target, token="old") as client:
            assert client.models() == []
        with Client(embedded.target, token="older") as client, pytest.raises(Unauthenticated):
            client.models()
