"""DPoP (RFC 9449) for Okta service apps that require it: a proof JWT on every request.

One EC P-256 key per process; each request carries a proof signed with it (`htm`, `htu`,
`iat`, `jti`; `ath` with an access token; the server's `nonce` once it asked for one). An
API 401 that brings a new `DPoP-Nonce` is answered once more with a fresh proof; the token
endpoint's 400 `use_dpop_nonce` is retried by app/okta/credentials.py with a new assertion.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Generator
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm


class DPoPAuth(httpx.Auth):
    """httpx auth that adds a DPoP proof to each request and answers nonce challenges."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._jwk: dict[str, Any] = ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        self._nonces: dict[str, str] = {}  # per server: the token endpoint's and the API's

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Sign, send, and sign again once if the server asks for its nonce."""
        server = _server(request.url)
        request.headers["DPoP"] = self.proof(request, self._nonces.get(server))
        response = yield request
        nonce = response.headers.get("DPoP-Nonce")
        fresh = nonce is not None and nonce != self._nonces.get(server)
        if nonce:
            self._nonces[server] = nonce
        # The API's challenge (401) is answered here; the token endpoint's (400) by its
        # caller, which must sign a new client assertion rather than send this one again.
        if fresh and response.status_code == 401:
            request.headers["DPoP"] = self.proof(request, nonce)
            yield request

    def proof(self, request: httpx.Request, nonce: str | None = None) -> str:
        """The proof JWT for this request."""
        claims: dict[str, Any] = {
            "htm": request.method,
            "htu": str(request.url.copy_with(query=None, fragment=None)),
            "iat": int(time.time()),
            "jti": uuid.uuid4().hex,
        }
        if nonce:
            claims["nonce"] = nonce
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme == "DPoP" and token:
            digest = hashlib.sha256(token.encode()).digest()
            claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        headers = {"typ": "dpop+jwt", "jwk": self._jwk}
        return jwt.encode(claims, self._key, algorithm="ES256", headers=headers)


def dpop_token(token: str, method: str, url: str) -> dict[str, str]:
    """A DPoP-bound access token's header (the proof is added by DPoPAuth)."""
    return {"Authorization": f"DPoP {token}"}


def _server(url: httpx.URL) -> str:
    # Okta's authorization server (/oauth2) and its API (/api) keep nonces of their own.
    return f"{url.host}:{url.port}/{url.path.strip('/').split('/')[0]}"
