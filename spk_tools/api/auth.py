"""Tokens and roles of the management API.

Two roles: ``read`` (every GET, attestation quotes) and ``admin``
(everything, every mutation included). A token is a random string the
client sends as ``Authorization: Bearer TOKEN``; the server keeps only its
SHA-256 when the tokens come from a file, and compares digests in constant
time.

A tokens file is TOML, one ``[[token]]`` table per token::

    [[token]]
    name = "ops"            # the requester is "api:ops" in the trace
    role = "admin"          # or "read"
    sha256 = "9f86d08..."   # SHA-256 of the token, hex (or: token = "the token itself")

Errors: :class:`TokenError` naming the file, the token and the field.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Role = Literal["read", "admin"]
ROLES: tuple[Role, ...] = ("read", "admin")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class TokenError(Exception):
    """A tokens file that cannot be used."""


@dataclass(frozen=True)
class Token:
    """One token: its name (the requester in the trace), its role, the SHA-256 of its secret."""

    name: str
    role: Role
    sha256: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    """The tokens a server accepts."""

    def __init__(self, tokens: list[Token]) -> None:
        names = [t.name for t in tokens]
        if len(set(names)) != len(names):
            raise TokenError("two tokens share a name")
        self._tokens = list(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def find(self, secret: str) -> Token | None:
        """The token whose secret this is, or None (every token is compared: constant time per token)."""
        wanted = digest(secret)
        found = None
        for token in self._tokens:
            if hmac.compare_digest(token.sha256, wanted):
                found = token
        return found

    @classmethod
    def generate(cls) -> tuple[Tokens, dict[str, str]]:
        """An ``admin`` and a ``read`` token with fresh random secrets; the secrets by name (printed once)."""
        secrets_by_name = {"admin": secrets.token_urlsafe(24), "read": secrets.token_urlsafe(24)}
        tokens = [Token(name, "admin" if name == "admin" else "read", digest(s)) for name, s in secrets_by_name.items()]
        return cls(tokens), secrets_by_name

    @classmethod
    def load(cls, path: Path) -> Tokens:
        """Read a tokens file (see the module's docstring). Errors: TokenError."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise TokenError(f"cannot read the tokens file {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise TokenError(f"{path}: not TOML: {exc}") from None
        entries = data.get("token")
        if not isinstance(entries, list) or not entries or set(data) != {"token"}:
            raise TokenError(f"{path}: expected one or more [[token]] tables and nothing else")
        tokens: list[Token] = []
        for i, entry in enumerate(entries):
            where = f"{path}: token.{i}"
            if not isinstance(entry, dict):
                raise TokenError(f"{where}: not a table")
            unknown = set(entry) - {"name", "role", "sha256", "token"}
            if unknown:
                raise TokenError(f"{where}: unknown field {sorted(unknown)[0]!r} (fields: name, role, sha256, token)")
            name, role = entry.get("name"), entry.get("role")
            if not isinstance(name, str) or not _NAME.match(name):
                raise TokenError(f"{where}.name: 1 to 40 letters, digits, '_', '.', '-'")
            if role not in ROLES:
                raise TokenError(f"{where}.role: {role!r} is not read or admin")
            if ("sha256" in entry) == ("token" in entry):
                raise TokenError(f"{where}: give exactly one of sha256 (the token's SHA-256, hex) and token")
            if "token" in entry:
                secret = entry["token"]
                if not isinstance(secret, str) or len(secret) < 16:
                    raise TokenError(f"{where}.token: a string of at least 16 characters")
                hashed = digest(secret)
            else:
                hashed = entry["sha256"]
                if not isinstance(hashed, str) or not _HEX64.match(hashed):
                    raise TokenError(f"{where}.sha256: 64 lowercase hex digits")
            tokens.append(Token(name, role, hashed))
        try:
            return cls(tokens)
        except TokenError as exc:
            raise TokenError(f"{path}: {exc}") from None
