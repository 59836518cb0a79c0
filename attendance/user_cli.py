"""``attendance user`` and ``attendance token``: who may use the dashboard and the API.

- ``attendance user add NAME --role admin|viewer`` asks for the password twice (or reads one
  line from standard input with ``--password-stdin``) and stores its Argon2 hash;
  ``--replace`` changes an existing user's password and role and signs them out everywhere.
- ``attendance user list`` / ``attendance user remove NAME``.
- ``attendance token add NAME --role viewer`` prints a new API token once (only its SHA-256
  is stored); ``token list`` / ``token remove NAME``.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from common.config import Config
from common.errors import UserError
from common.runner import add_common_arguments_after_action
from store.factory import open_site_store
from store.records import ROLES

HELP = "dashboard users: add (asks for the password), list, remove"
TOKEN_HELP = "API tokens for scripts and kiosks: add (printed once), list, remove"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add a user (asks for the password)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", choices=ROLES, default="viewer")
    add.add_argument("--replace", action="store_true", help="change an existing user")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    sub.add_parser("list", help="list users and roles")
    remove = sub.add_parser("remove", help="remove a user and end their sessions")
    remove.add_argument("name", metavar="NAME")
    for action in sub.choices.values():
        add_common_arguments_after_action(action)


def configure_tokens(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="make a token (printed once)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", choices=ROLES, default="viewer")
    sub.add_parser("list", help="list tokens (names and roles, never the tokens)")
    remove = sub.add_parser("remove", help="revoke a token")
    remove.add_argument("name", metavar="NAME")
    for action in sub.choices.values():
        add_common_arguments_after_action(action)


def _password(from_stdin: bool) -> str:
    from web.security import check_password_rules

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise UserError("no terminal to ask for the password on: use --password-stdin")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise UserError("the two passwords differ; nothing was changed")
    return check_password_rules(password)


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise UserError(f"user name {name[:64]!r}: use 1-64 printable characters")
    return name


def run(args: argparse.Namespace, cfg: Config) -> int:
    from web.security import new_user

    with open_site_store(cfg) as site:
        if args.user_command == "list":
            users = site.users()
            for user in users:
                print(f"{user.name}\t{user.role}\tsince {user.created}")
            if not users:
                print("no users yet: attendance user add NAME --role admin")
            return 0
        name = _check_name(args.name)
        if args.user_command == "remove":
            if not site.remove_user(name):
                raise UserError(f"no user called {name!r} (attendance user list shows them)")
            print(f"removed user {name} and ended their sessions")
            return 0
        if site.user(name) is not None and not args.replace:
            raise UserError(f"user {name!r} exists: add --replace to change their password")
        user = new_user(name, _password(args.password_stdin), args.role)
        site.add_user(user, replace=args.replace)
        print(f"{'changed' if args.replace else 'added'} user {name} ({args.role})")
    return 0


def run_tokens(args: argparse.Namespace, cfg: Config) -> int:
    from web.security import new_api_token

    with open_site_store(cfg) as site:
        if args.token_command == "list":
            for token in site.tokens():
                print(f"{token.name}\t{token.role}\tsince {token.created}")
            return 0
        name = _check_name(args.name)
        if args.token_command == "remove":
            if not site.remove_token(name):
                raise UserError(f"no token called {name!r} (attendance token list shows them)")
            print(f"revoked token {name}")
            return 0
        secret, record = new_api_token(name, args.role)
        if not site.add_token(record):
            raise UserError(f"a token called {name!r} exists: remove it first or pick a name")
        print(secret)
        print(
            f"token {name} ({args.role}): shown once; send it as 'Authorization: Bearer ...'",
            file=sys.stderr,
        )
    return 0
