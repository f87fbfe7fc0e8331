"""The push channel: Firebase Cloud Messaging's HTTP v1 API with a service account.

The channel gets its OAuth2 access token by the JWT-bearer grant (RFC 7523): an RS256
JWT signed with the service account's key (iss = client_email, aud = token_uri, scope
firebase.messaging), posted to token_uri. The token is cached until shortly before it
expires; concurrent sends wait for one refresh rather than each asking for a token.

A send is `POST {base_url}/v1/projects/{project_id}/messages:send` with
`{"message": {"token", "notification": {"title", "body"}, "data": {str: str}}}`.

Outcomes: 200 -> `Sent` with the message's `name`; 404 UNREGISTERED, 400 INVALID_ARGUMENT
about the registration token and 403 SENDER_ID_MISMATCH -> `PermanentFailure(bounce=
"hard")` (the token is dead or not ours); other 4xx -> `PermanentFailure`; 429, 5xx,
time-outs, connection errors and a failing token endpoint -> `TemporaryFailure` with
`Retry-After`; a 401 refreshes the token and retries once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from clarion.core.clock import Clock, SystemClock
from clarion.core.outbound import PUBLIC_ONLY, Policy, RefusedAddress
from clarion.messaging.channels.base import (
    ChannelKind,
    Outgoing,
    PermanentFailure,
    Sent,
    TemporaryFailure,
)
from clarion.messaging.channels.webhook import excerpt, json_object, owned_client, retry_after

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_ASSERTION_LIFETIME = timedelta(hours=1)  # the most Google accepts
_REFRESH_MARGIN = timedelta(minutes=2)
_REQUIRED = ("project_id", "client_email", "private_key", "token_uri")
_DEAD_TOKEN_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})


@dataclass(frozen=True, slots=True, kw_only=True)
class FcmSettings:
    """A Firebase service account (its JSON key file as a dict: project_id, client_email,
    private_key, token_uri, optionally private_key_id) and where FCM is."""

    service_account: Mapping[str, str] = field(repr=False)
    base_url: str = "https://fcm.googleapis.com"
    timeout: float = 10.0

    def __post_init__(self) -> None:
        missing = [name for name in _REQUIRED if not self.service_account.get(name)]
        if missing:
            raise ValueError(f"the service account lacks {', '.join(missing)}")

    def __repr__(self) -> str:
        account = self.service_account
        return (
            f"FcmSettings(project_id={account['project_id']!r}, "
            f"client_email={account['client_email']!r}, base_url={self.base_url!r}, "
            f"timeout={self.timeout!r})"
        )


@dataclass(frozen=True, slots=True)
class _AccessToken:
    value: str
    refresh_at: datetime


class PushChannel:
    """Sends push notifications through FCM HTTP v1."""

    kind: ChannelKind = "push"

    def __init__(
        self,
        settings: FcmSettings,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        policy: Policy = PUBLIC_ONLY,
    ) -> None:
        self.settings = settings
        account = settings.service_account
        key = load_pem_private_key(account["private_key"].encode(), password=None)
        if not isinstance(key, RSAPrivateKey):
            raise ValueError("the service account key is not an RSA key")
        self._key = key
        self._clock = clock or SystemClock()
        self._client, self._owns_client = owned_client(client, settings.timeout, policy)
        self._token: _AccessToken | None = None
        self._refresh = asyncio.Lock()
        base = settings.base_url.rstrip("/")
        self._url = f"{base}/v1/projects/{account['project_id']}/messages:send"

    async def send(self, message: Outgoing) -> Sent:
        """Send the notification to the device token in `message.to`; `Sent` carries
        FCM's message name."""
        if not message.to:
            raise PermanentFailure("no device token", bounce="hard")
        payload = {"message": fcm_message(message)}
        token = await self._access_token()
        response = await self._post(payload, token)
        if response.status_code == 401:
            token = await self._access_token(stale=token)
            response = await self._post(payload, token)
        return self._outcome(response)

    async def close(self) -> None:
        """Close the HTTP client if this channel made it."""
        if self._owns_client:
            await self._client.aclose()

    async def _post(self, payload: dict[str, Any], token: str) -> httpx.Response:
        try:
            return await self._client.post(
                self._url,
                json=payload,
                headers={"Authorization": f"Bearer {token}"},
                timeout=self.settings.timeout,
            )
        except httpx.TimeoutException as exc:
            raise TemporaryFailure(f"FCM timed out: {type(exc).__name__}") from exc
        except RefusedAddress as exc:
            raise PermanentFailure(str(exc)) from exc
        except httpx.TransportError as exc:
            raise TemporaryFailure(f"FCM unreachable: {type(exc).__name__}: {exc}") from exc

    async def _access_token(self, *, stale: str | None = None) -> str:
        """A valid access token; `stale` is one FCM just refused, so not to be reused."""
        current = self._token
        if self._usable(current, stale):
            assert current is not None
            return current.value
        async with self._refresh:
            current = self._token  # another send may have refreshed it while we waited
            if not self._usable(current, stale):
                current = self._token = await self._fetch_token()
            assert current is not None
            return current.value

    def _usable(self, token: _AccessToken | None, stale: str | None) -> bool:
        return token is not None and token.value != stale and self._clock.now() < token.refresh_at

    async def _fetch_token(self) -> _AccessToken:
        account = self.settings.service_account
        now = self._clock.now()
        claims = {
            "iss": account["client_email"],
            "scope": FCM_SCOPE,
            "aud": account["token_uri"],
            "iat": int(now.timestamp()),
            "exp": int((now + _ASSERTION_LIFETIME).timestamp()),
        }
        key_id = account.get("private_key_id")
        headers = {"kid": key_id} if key_id else None
        import jwt  # here: PyJWT's algorithms take ~0.2 s to import, for FCM channels only

        assertion = jwt.encode(claims, self._key, algorithm="RS256", headers=headers)
        try:
            response = await self._client.post(
                account["token_uri"],
                data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion},
                timeout=self.settings.timeout,
            )
        except RefusedAddress as exc:
            raise PermanentFailure(str(exc)) from exc
        except httpx.TransportError as exc:  # time-outs included
            raise TemporaryFailure(f"token endpoint unreachable: {type(exc).__name__}") from exc
        body = json_object(response)
        value, lifetime = body.get("access_token"), body.get("expires_in", 3600)
        if response.status_code != 200 or not isinstance(value, str):
            # Bad credentials are fixed by the operator, after which a retry works.
            reason = body.get("error_description") or body.get("error") or excerpt(response)
            raise TemporaryFailure(
                f"no FCM access token ({response.status_code}): {reason}",
                retry_after=retry_after(response, now=now),
            )
        expires_in = timedelta(seconds=float(lifetime))
        return _AccessToken(value=value, refresh_at=now + expires_in - _REFRESH_MARGIN)

    def _outcome(self, response: httpx.Response) -> Sent:
        status = response.status_code
        body = json_object(response)
        if status == 200:
            name = body.get("name")
            return Sent(provider_id=name if isinstance(name, str) else None)
        error = body.get("error")
        error = error if isinstance(error, dict) else {}
        code = _fcm_error_code(error)
        reason = f"FCM {status} {code or error.get('status', '')}: "
        reason += str(error.get("message") or excerpt(response))
        if status in (401, 429) or status >= 500:
            raise TemporaryFailure(reason, retry_after=retry_after(response, now=self._clock.now()))
        if code in _DEAD_TOKEN_CODES or (status == 400 and _about_the_token(error)):
            raise PermanentFailure(reason, bounce="hard")
        raise PermanentFailure(reason)


def fcm_message(message: Outgoing) -> dict[str, Any]:
    """The FCM v1 `message` object for `message`: the token, a notification when there is
    a title or body, and the data map with every value made a string (JSON for non-strings)."""
    body: dict[str, Any] = {"token": message.to}
    notification = {
        name: value
        for name, value in (("title", message.subject), ("body", message.text))
        if value is not None
    }
    if notification:
        body["notification"] = notification
    if message.data:
        body["data"] = {
            str(key): value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            for key, value in message.data.items()
        }
    return body


def _fcm_error_code(error: dict[str, Any]) -> str | None:
    """The FcmError errorCode in an error's details (UNREGISTERED, INVALID_ARGUMENT...)."""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return None


def _about_the_token(error: dict[str, Any]) -> bool:
    """Whether a 400 INVALID_ARGUMENT blames the registration token, not the payload."""
    for detail in error.get("details") or []:
        for violation in (detail.get("fieldViolations") or []) if isinstance(detail, dict) else []:
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return "registration token" in str(error.get("message", "")).lower()
