"""The CLI's shared helpers that the command tests do not reach on every branch."""

from __future__ import annotations

import pytest

from oversync_sa.cli._common import CliError, asyncpg_engine_url, redact_url


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+asyncpg"])
def test_postgres_urls_become_asyncpg_urls(scheme: str) -> None:
    url, args = asyncpg_engine_url(f"{scheme}://u:p@h:5/db?application_name=x")
    assert url == "postgresql+asyncpg://u:p@h:5/db?application_name=x"
    assert args == {"server_settings": {"timezone": "UTC"}}


def test_sslmode_becomes_the_asyncpg_ssl_argument() -> None:
    url, args = asyncpg_engine_url("postgresql://h/db?sslmode=require&connect_timeout=3")
    assert url == "postgresql+asyncpg://h/db?connect_timeout=3"
    assert args["ssl"] == "require"


@pytest.mark.parametrize("url", ["mysql://h/db", "h/db", ""])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(CliError, match="must be a postgresql:// URL") as info:
        asyncpg_engine_url(url)
    assert info.value.exit_code == 2


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
