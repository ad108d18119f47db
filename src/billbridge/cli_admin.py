"""`billbridge admin create` and `billbridge tokens create|list|revoke`: dashboard access.

billbridge admin create --username admin          # prompts for the password twice
echo "$PASSWORD" | billbridge admin create --password-stdin
billbridge tokens create ci-deploy                # prints the token once
billbridge tokens revoke 3
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from billbridge.accounts import create_api_token, create_user
from billbridge.cli_common import (
    EXIT_FAILURE,
    echo_error,
    format_time,
    friendly_errors,
    opened_store,
    table,
)
from billbridge.config import load_settings

admin_app = typer.Typer(help="Manage dashboard accounts.", no_args_is_help=True)
tokens_app = typer.Typer(help="Manage API tokens for scripts.", no_args_is_help=True)


@admin_app.command("create")
def admin_create(
    username: Annotated[str, typer.Option(help="The login name.")] = "admin",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    reset: Annotated[
        bool, typer.Option("--reset", help="Set a new password if the account exists.")
    ] = False,
) -> None:
    """Create a dashboard account (or with --reset give it a new password)."""
    with friendly_errors():
        settings = load_settings()
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        with opened_store(settings) as (store, _):
            if store.get_user(username.strip()) is not None and not reset:
                echo_error(f"error: the account {username!r} exists; add --reset to change it")
                raise typer.Exit(EXIT_FAILURE)
            user = create_user(store, username, password)
        typer.echo(f"Account {user.username!r} is ready: log in at /login")


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="What script or person uses the token.")],
) -> None:
    """Create an API token and print it once (only its hash is stored)."""
    with friendly_errors():
        settings = load_settings()
        with opened_store(settings) as (store, _):
            token, record = create_api_token(store, name)
        typer.echo(token)
        typer.echo(
            f"Token {record.token_id} ({record.name}) created. It is shown only now: send it "
            "as `Authorization: Bearer TOKEN`.",
            err=True,
        )


@tokens_app.command("list")
def tokens_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List API tokens (never the tokens themselves)."""
    with friendly_errors():
        settings = load_settings()
        with opened_store(settings) as (store, _):
            records = store.list_api_tokens()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "id": r.token_id,
                        "name": r.name,
                        "prefix": r.prefix,
                        "created_at": r.created_at,
                        "last_used_at": r.last_used_at,
                        "revoked_at": r.revoked_at,
                    }
                    for r in records
                ],
                indent=2,
            )
        )
        return
    rows = [
        [
            str(r.token_id),
            r.name,
            r.prefix + "…",
            format_time(r.created_at),
            format_time(r.last_used_at),
            "revoked" if r.revoked_at else "active",
        ]
        for r in records
    ]
    typer.echo(table(["ID", "NAME", "TOKEN", "CREATED", "LAST USED", "STATUS"], rows))


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[int, typer.Argument(help="The ID from `tokens list`.")],
) -> None:
    """Revoke an API token: it stops working at once."""
    with friendly_errors():
        settings = load_settings()
        with opened_store(settings) as (store, _):
            revoked = store.revoke_api_token(token_id)
    if not revoked:
        echo_error(f"error: no active token with ID {token_id}; see `billbridge tokens list`")
        raise typer.Exit(EXIT_FAILURE)
    typer.echo(f"Token {token_id} revoked.")
