"""Secrets never reach an artifact: redaction of URIs and of secret-looking environment values.

Applied before anything is written to a file (``run.json``, ``metrics.json``), printed,
or sent to MLflow as a param or tag. Two layers:

* :func:`redact_uri` masks credentials in URIs: ``user:token@host`` and query parameters
  such as ``token=``, ``key=``, ``password=``, ``sig=``;
* :func:`redact` additionally masks every value of a secret-looking environment variable
  (``*KEY*``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ...) and the ``key`` of
  ``~/.kaggle/kaggle.json`` wherever it appears in a text.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MASK = "***"
MIN_SECRET_LENGTH = 8

#: Query parameters whose values are credentials (case-insensitive, also as suffixes: x-amz-signature).
SECRET_QUERY_KEYS = ("token", "key", "apikey", "api_key", "access_token", "password", "passwd", "pwd", "secret",
                     "sig", "signature", "credential", "credentials", "auth", "authorization", "session")
#: Environment variable names whose values are secrets.
SECRET_ENV_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|SIGNATURE|PRIVATE", re.IGNORECASE)
#: Variables that can hold a URI with credentials in it (their userinfo and query get masked).
URI_ENV_NAMES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DATABASE_URL")

# scheme://user:password@host  or  scheme://token@host
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#@\s]+)@")
_QUERY = re.compile(r"(?P<sep>[?&;])(?P<name>[^=&#\s]+)=(?P<value>[^&#\s]*)")


def _secret_query_name(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    return any(lowered == key or lowered.endswith(f"_{key}") or lowered.endswith(key) for key in SECRET_QUERY_KEYS)


def redact_uri(text: str) -> str:
    """Mask the userinfo (``user:token@``) and secret query values of every URI in ``text``."""
    def userinfo(match: re.Match) -> str:
        user = match["userinfo"].split(":", 1)[0]
        return f"{match['scheme']}{user + ':' if ':' in match['userinfo'] else ''}{MASK}@"

    def query(match: re.Match) -> str:
        if _secret_query_name(match["name"]):
            return f"{match['sep']}{match['name']}={MASK}"
        return match.group(0)

    return _QUERY.sub(query, _USERINFO.sub(userinfo, text))


def _kaggle_json_key() -> str | None:
    config_dir = os.environ.get("KAGGLE_CONFIG_DIR") or str(Path.home() / ".kaggle")
    try:
        data = json.loads((Path(config_dir) / "kaggle.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    key = data.get("key") if isinstance(data, dict) else None
    return key if isinstance(key, str) else None


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret the process can see, longest first: secret-named env values, URI credentials, kaggle.json's key."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in environ.items():
        if not value:
            continue
        if SECRET_ENV_NAME.search(name):
            found.add(value)
        if name in URI_ENV_NAMES:
            for match in _USERINFO.finditer(value):
                found.update(part for part in match["userinfo"].split(":")[1:] if part)
                if ":" not in match["userinfo"]:
                    found.add(match["userinfo"])
            for match in _QUERY.finditer(value):
                if _secret_query_name(match["name"]) and match["value"]:
                    found.add(match["value"])
    key = _kaggle_json_key()
    if key:
        found.add(key)
    # Short values ("1", "true", "8080") would mask innocent text and numbers: a secret has 8 characters or more.
    return sorted((v for v in found if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with URI credentials and every known secret value replaced by ``***``."""
    text = redact_uri(str(text))
    for value in secret_values(environ):
        text = text.replace(value, MASK)
    return text


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a flat mapping with every string value redacted (numbers pass through)."""
    return {key: redact(value) if isinstance(value, str) else value for key, value in values.items()}
