"""Encryption at rest for stored credentials and alert settings (Fernet, from `cryptography`).

    box = SecretBox.from_settings(settings)
    token = box.encrypt_json({"api_key": "sk_test_..."})
    box.decrypt_json(token)

The key comes from BILLBRIDGE_SECRET_KEY (a Fernet key, or any passphrase, which is
stretched with scrypt), or is generated once into `<var dir>/secret-key` (mode 0600).
Losing the key makes stored credentials unreadable: they must then be entered again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from billbridge.config import Settings
from billbridge.errors import ConfigurationError

KEY_FILE = "secret-key"
_PASSPHRASE_SALT = b"billbridge-secret-key-v1"  # fixed: the passphrase is the secret


def _fernet_key(value: str) -> bytes:
    """A Fernet key as given, or one derived from a passphrase (scrypt)."""
    raw = value.strip().encode("utf-8")
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32:
            return raw
    except ValueError:
        pass
    derived = hashlib.scrypt(raw, salt=_PASSPHRASE_SALT, n=2**14, r=8, p=1, dklen=32)
    return base64.urlsafe_b64encode(derived)


def load_or_create_key(var_dir: Path) -> bytes:
    """The key kept in `var_dir/secret-key`, generated (mode 0600) on first use."""
    path = var_dir / KEY_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip().encode("ascii")
    var_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    # O_EXCL: when two processes start at once, one creates the file, the other reads it.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip().encode("ascii")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key.decode("ascii") + "\n")
    return key


class SecretBox:
    """Encrypts and decrypts small JSON documents; never logs or echoes their content."""

    def __init__(self, key: bytes | Callable[[], bytes]) -> None:
        self._key = key
        self._fernet_cache: Fernet | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The key file is read (or created) only when something is encrypted or decrypted."""
        if settings.secret_key is not None:
            return cls(_fernet_key(settings.secret_key.get_secret_value()))
        return cls(lambda: load_or_create_key(settings.var_dir))

    @property
    def _fernet(self) -> Fernet:
        if self._fernet_cache is None:
            key = self._key if isinstance(self._key, bytes) else self._key()
            self._fernet_cache = Fernet(key)
        return self._fernet_cache

    def encrypt_json(self, value: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(value).encode("utf-8")).decode("ascii")

    def decrypt_json(self, token: str) -> dict[str, Any]:
        """The document; ConfigurationError when the key does not match (never the data)."""
        try:
            data = json.loads(self._fernet.decrypt(token.encode("ascii")))
        except (InvalidToken, ValueError):
            raise ConfigurationError(
                "stored credentials cannot be decrypted with this secret key "
                "(BILLBRIDGE_SECRET_KEY or the var dir's secret-key changed): enter them again"
            ) from None
        if not isinstance(data, dict):
            raise ConfigurationError("stored credentials are not a JSON object: enter them again")
        return data
