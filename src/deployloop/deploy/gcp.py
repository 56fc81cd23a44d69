"""Google Cloud access for the `cloudrun` target: the Admin API client, credentials, ID tokens.

Every Google library is imported inside the function that needs it: they cost ~0.3 s to
import, and `loop status` (or any target but `cloudrun`) must never pay for them.

`CLOUDRUN_EMULATOR_HOST=host:port` points the client at an emulator (or the fake of the
tests) over an insecure gRPC channel with no credentials at all, the way
`STORAGE_EMULATOR_HOST` works for Cloud Storage.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud.run_v2 import ServicesClient

EMULATOR_ENV = "CLOUDRUN_EMULATOR_HOST"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
LOGIN_HINT = (
    "run `gcloud auth application-default login`"
    " (or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file)"
)


class CredentialsError(Exception):
    """No usable Google credentials, or no way to mint an ID token; the message is one line."""


def emulator_host() -> str | None:
    """`host:port` of the emulator named by CLOUDRUN_EMULATOR_HOST, or None."""
    host = os.environ.get(EMULATOR_ENV, "").strip()
    return host or None


def services_client() -> ServicesClient:
    """A Cloud Run Admin API v2 client: the emulator's when configured, else ADC's.

    A transport built on a ready channel skips every credential lookup; giving the client
    an endpoint and anonymous credentials instead would still open a TLS channel (and fail
    with a misleading 503).
    """
    from google.cloud import run_v2

    host = emulator_host()
    if host is not None:
        import grpc  # type: ignore[import-untyped]
        from google.cloud.run_v2.services.services.transports.grpc import (
            ServicesGrpcTransport,
        )

        channel = grpc.insecure_channel(host)
        return run_v2.ServicesClient(transport=ServicesGrpcTransport(channel=channel))
    return run_v2.ServicesClient(credentials=default_credentials())


def default_credentials() -> Credentials:
    """Application Default Credentials, or CredentialsError naming the command that fixes it."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except DefaultCredentialsError as exc:
        # google-auth's own text is a paragraph with a link; only a bad key file says more.
        key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        detail = f" ({_first_line(exc)})" if key_file else ""
        raise CredentialsError(
            f"no Google Cloud credentials (Application Default Credentials){detail}: {LOGIN_HINT}"
        ) from None
    return credentials


def fetch_id_token(audience: str) -> str:
    """A fresh Google-signed ID token for `audience` (a Cloud Run service URL).

    Service account keys (GOOGLE_APPLICATION_CREDENTIALS) and the metadata server (GCE,
    Cloud Run, Cloud Build) mint tokens for any audience through
    `google.oauth2.id_token.fetch_id_token`, which looks at nothing else; ADC that
    impersonates a service account mints them through the IAM Credentials API. User
    credentials from `gcloud auth application-default login` cannot choose an audience: for
    them the ID token of a credential refresh is used, best effort (its audience is the
    OAuth client of gcloud's ADC login; whether Cloud Run accepts it is not verified here;
    if the health check answers 401/403, log in with `--impersonate-service-account`).
    The token is never logged or written anywhere.

    google-auth's `transport.requests` needs the `requests` package; google-api-core (a
    dependency of google-cloud-run) requires it, so it is always there with this target.
    """
    import google.auth.transport.requests
    import google.oauth2.credentials
    import google.oauth2.id_token
    from google.auth import impersonated_credentials
    from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError

    request = google.auth.transport.requests.Request()
    credentials = default_credentials()
    try:
        if isinstance(credentials, impersonated_credentials.Credentials):
            # `gcloud auth application-default login --impersonate-service-account=...`
            id_credentials = impersonated_credentials.IDTokenCredentials(  # type: ignore[no-untyped-call]
                credentials, target_audience=audience, include_email=True
            )
            id_credentials.refresh(request)
            return str(id_credentials.token)
        if isinstance(credentials, google.oauth2.credentials.Credentials):
            credentials.refresh(request)  # type: ignore[no-untyped-call]
            token = credentials.id_token
            if not token:
                raise CredentialsError(
                    f"cannot mint an ID token for {audience}: the user credentials of ADC"
                    " carry none; log in again with `gcloud auth application-default login`"
                    " or use a service account key (GOOGLE_APPLICATION_CREDENTIALS)"
                )
            return str(token)
        token = google.oauth2.id_token.fetch_id_token(  # type: ignore[no-untyped-call]
            request, audience
        )
    except DefaultCredentialsError as exc:
        raise CredentialsError(
            f"cannot mint an ID token for {audience} ({_first_line(exc)}): use a service"
            " account key (GOOGLE_APPLICATION_CREDENTIALS), run on Google Cloud, or set"
            " allow_unauthenticated = true"
        ) from None
    except GoogleAuthError as exc:
        raise CredentialsError(
            f"cannot mint an ID token for {audience}: {_first_line(exc)}; {LOGIN_HINT}"
        ) from None
    return str(token)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
