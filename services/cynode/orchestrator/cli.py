"""`cynode-orchestrator`: serve, migrate, and local user administration.

Exit codes: 0 ok; 1 runtime failure; 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import secrets
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvloop
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.orchestrator.app import (
    ControlPlaneHook,
    Orchestrator,
    build_gateway,
    control_plane_hook,
)
from cynode.orchestrator.auth import (
    ADMIN_HANDLE,
    Passwords,
    UserError,
    create_user,
    disable_user,
    ensure_admin,
    set_password,
)
from cynode.orchestrator.certs import DEFAULT_NAMES, CertsError, init_certs, issue_node
from cynode.orchestrator.config import Settings, SettingsError, load_settings, settings_help
from cynode.orchestrator.heap import keep_freed_buffers
from cynode.orchestrator.store import DatabaseUrlError, make_engine, session_factory, upgrade

PROG = "cynode-orchestrator"
STDIN_HELP = "read the password from stdin (one line)"
# For the commands that only open the database; `serve --help` explains every setting.
DATABASE_EPILOG = (
    "The database is CYNODE_DATABASE_URL (default: SQLite in CYNODE_DATA_DIR), or\n"
    "database_url / data_dir in the --config YAML file.\n"
    f"Every setting: `{PROG} serve --help`."
)
RAW = argparse.RawDescriptionHelpFormatter
log = logging.getLogger("cynode.orchestrator")


class UsageError(Exception):
    """Exit 2 with this message."""


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _database_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    common: argparse.ArgumentParser,
    help_text: str,
) -> argparse.ArgumentParser:
    """A subcommand that only opens the database: --config, and an epilog saying where
    the database comes from."""
    return sub.add_parser(
        name, parents=[common], help=help_text, epilog=DATABASE_EPILOG, formatter_class=RAW
    )


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="YAML settings file")
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The CyNode orchestrator.",
        epilog=f"Settings come from the environment or a YAML file: `{PROG} serve --help`.",
        formatter_class=RAW,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="migrate, bootstrap the admin user, and serve the gateway",
        description=(
            "Applies migrations, creates the user `admin` from ADMIN_PASSWORD on first start,\n"
            "then serves the user gateway and the control plane (REST and gRPC each) until\n"
            "SIGTERM or SIGINT."
        ),
        epilog=settings_help(),
        formatter_class=RAW,
    )
    serve.add_argument(
        "--dev",
        action="store_true",
        default=None,
        help="development mode: without ADMIN_PASSWORD, generate one and print it once",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow plain text on a non-loopback address",
    )
    serve.add_argument("--host", help="listen address (CYNODE_LISTEN_HOST)")
    serve.add_argument("--rest-port", type=int, help="gateway REST port")
    serve.add_argument("--grpc-port", type=int, help="gateway gRPC port")

    _database_command(sub, "migrate", common, "apply database migrations and exit")

    certs = sub.add_parser("certs", help="a private CA and certificates for TLS")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    init = certs_sub.add_parser(
        "init",
        help="create a private CA (kept if present), the server certificate and node ones",
        description=(
            "Writes ca.pem/ca.key, server.pem/server.key (for --name, default localhost, "
            "127.0.0.1 and ::1) and node-<slug>.pem/.key per --node into DIR, then prints "
            "the CA fingerprint. Point CYNODE_TLS_CERT/KEY at server.pem/key, nodes' "
            "orchestrator.ca_file at ca.pem."
        ),
    )
    init.add_argument("--dir", type=Path, default=Path("./var/certs"), help="output directory")
    init.add_argument(
        "--name", action="append", default=[], help="host name or IP of the orchestrator"
    )
    init.add_argument(
        "--node", action="append", default=[], help="node slug to issue a certificate for"
    )
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    node = certs_sub.add_parser("node", help="issue a node certificate from the CA in DIR")
    node.add_argument("slug")
    node.add_argument("--dir", type=Path, default=Path("./var/certs"), help="CA directory")
    node.add_argument("--name", action="append", default=[], help="worker API host name or IP")

    user = sub.add_parser("user", help="manage local users")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    create = _database_command(user_sub, "create", common, "create a user")
    create.add_argument("handle")
    create.add_argument("--admin", action="store_true", help="an administrator (sees all tasks)")
    create.add_argument("--email")
    create.add_argument("--password-stdin", action="store_true", help=STDIN_HELP)
    passwd = _database_command(user_sub, "passwd", common, "set a user's password")
    passwd.add_argument("handle")
    passwd.add_argument("--password-stdin", action="store_true", help=STDIN_HELP)
    disable = _database_command(user_sub, "disable", common, "disable a user")
    disable.add_argument("handle")
    return parser


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise UsageError("the passwords differ")
    else:
        raise UsageError("no terminal to prompt on: use --password-stdin")
    if not password:
        raise UsageError("empty password")
    return password


async def _migrated_engine(settings: Settings) -> AsyncEngine:
    engine = make_engine(settings.effective_database_url)
    await upgrade(engine)
    return engine


async def _migrate(settings: Settings) -> None:
    engine = await _migrated_engine(settings)
    await engine.dispose()
    _say("database is at the latest migration")


async def _user(args: argparse.Namespace, settings: Settings) -> None:
    password = (
        _read_password(args.password_stdin) if args.user_command in ("create", "passwd") else ""
    )
    engine = await _migrated_engine(settings)
    factory = session_factory(engine)
    try:
        if args.user_command == "create":
            await create_user(
                factory, Passwords(), args.handle, password, is_admin=args.admin, email=args.email
            )
            _say(f"created user {args.handle}{' (admin)' if args.admin else ''}")
        elif args.user_command == "passwd":
            await set_password(factory, Passwords(), args.handle, password)
            _say(f"password of {args.handle} changed; its sessions are revoked")
        else:
            await disable_user(factory, args.handle)
            _say(f"user {args.handle} disabled; its sessions are revoked")
    finally:
        await engine.dispose()


def _dev_defaults(settings: Settings) -> tuple[Settings, str | None]:
    """In --dev, secrets that are not set get generated values, printed once."""
    generated = None
    if not settings.admin_password:
        generated = secrets.token_urlsafe(12)
        settings = replace(settings, admin_password=generated)
    if not settings.node_psk:
        psk = secrets.token_urlsafe(24)
        settings = replace(settings, node_psk=psk)
        _say(f"--dev: NODE_PSK not set; nodes register with the development key {psk}")
    return settings, generated


async def serve(
    settings: Settings,
    *,
    control_plane: ControlPlaneHook | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Runs until `stop` is set (or SIGTERM/SIGINT arrives)."""
    generated: str | None = None
    if settings.dev:
        settings, generated = _dev_defaults(settings)
    if not settings.admin_password:
        raise UsageError(
            "ADMIN_PASSWORD is not set: it is the bootstrap password of user `admin`. "
            "Set it, or start with --dev for a generated development password."
        )
    engine = await _migrated_engine(settings)
    try:
        passwords = Passwords()
        created = await ensure_admin(session_factory(engine), passwords, settings.admin_password)
        if created and generated is not None:
            _say(f"--dev: created user {ADMIN_HANDLE} with the development password {generated}")
        elif created:
            _say(f"created user {ADMIN_HANDLE} from ADMIN_PASSWORD")
        gateway = build_gateway(settings, engine, passwords=passwords)
        orchestrator = Orchestrator(gateway, control_plane)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await orchestrator.start()
        scheme = "https" if settings.tls_enabled else "http"
        _say(
            f"user gateway: REST {scheme}://{settings.host}:{orchestrator.rest_port}"
            f"  gRPC {settings.host}:{orchestrator.grpc_port}"
        )
        if orchestrator.control_ports is not None:
            cp = orchestrator.control_ports
            _say(
                f"control plane: REST {scheme}://{settings.host}:{cp.rest_port}"
                f"  gRPC {settings.host}:{cp.grpc_port}"
            )
        try:
            await stop.wait()
        finally:
            _say("shutting down")
            await orchestrator.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    finally:
        await engine.dispose()


def _certs(args: argparse.Namespace) -> None:
    if args.certs_command == "init":
        result = init_certs(args.dir, args.name or DEFAULT_NAMES, nodes=args.node, force=args.force)
        _say(f"certificates in {result.directory} for {', '.join(result.server_names)}")
        for slug in result.nodes:
            _say(f"node certificate: {result.directory}/node-{slug}.pem (key beside it)")
        print(f"CA fingerprint (SHA-256): {result.fingerprint}", flush=True)
    else:
        cert, _key = issue_node(args.dir, args.slug, args.name)
        _say(f"node certificate: {cert} (key beside it)")


def _warn_plain_text(settings: Settings) -> None:
    """--insecure on a reachable address: say so loudly, on every start."""
    if settings.plain_text_exposed:
        banner = "!" * 72
        for line in (
            banner,
            f"INSECURE: serving PLAIN TEXT on {settings.host}. Passwords, tokens and the",
            "node PSK cross the network unencrypted. Use CYNODE_TLS_CERT/KEY (see",
            "`cynode-orchestrator certs init`) for anything but an isolated lab.",
            banner,
        ):
            log.warning("%s", line)
            _say(line)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "certs":
            _certs(args)
            return 0
        overrides: dict[str, Any] = {}
        if args.command == "serve":
            overrides = {
                "dev": args.dev,
                "insecure": args.insecure,
                "host": args.host,
                "gateway_rest_port": args.rest_port,
                "gateway_grpc_port": args.grpc_port,
            }
        settings = load_settings(args.config, **overrides)
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        if args.command == "serve":
            _warn_plain_text(settings)
            keep_freed_buffers()
            # uvloop, not the stdlib loop, under both port pairs (SPEC §1.5).
            uvloop.run(serve(settings, control_plane=control_plane_hook()))
        elif args.command == "migrate":
            asyncio.run(_migrate(settings))
        else:
            asyncio.run(_user(args, settings))
    except (UsageError, SettingsError, DatabaseUrlError, CertsError) as exc:
        _say(str(exc))
        return 2
    except UserError as exc:
        _say(str(exc))
        return 1
    except OSError as exc:
        _say(f"cannot start: {exc.strerror or exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
