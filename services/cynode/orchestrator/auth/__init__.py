"""Local accounts: Argon2id passwords, JWT access tokens, rotating refresh tokens."""

from cynode.orchestrator.auth.authenticator import (
    UNAUTHENTICATED_DETAIL,
    Authenticator,
    Principal,
)
from cynode.orchestrator.auth.passwords import Passwords
from cynode.orchestrator.auth.servicer import AuthServicer
from cynode.orchestrator.auth.sessions import (
    AuthFailed,
    LoginThrottled,
    SessionManager,
    TokenPair,
)
from cynode.orchestrator.auth.throttle import LoginThrottle
from cynode.orchestrator.auth.tokens import InvalidToken, TokenIssuer
from cynode.orchestrator.auth.users import (
    ADMIN_HANDLE,
    UserError,
    create_user,
    disable_user,
    ensure_admin,
    set_password,
)

__all__ = [
    "ADMIN_HANDLE",
    "UNAUTHENTICATED_DETAIL",
    "AuthFailed",
    "AuthServicer",
    "Authenticator",
    "InvalidToken",
    "LoginThrottle",
    "LoginThrottled",
    "Passwords",
    "Principal",
    "SessionManager",
    "TokenIssuer",
    "TokenPair",
    "UserError",
    "create_user",
    "disable_user",
    "ensure_admin",
    "set_password",
]
