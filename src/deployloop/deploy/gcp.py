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
    from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
    from google.cloud.run_v2 import ExecutionsClient, JobsClient, ServicesClient, TasksClient
    from google.cloud.secretmanager_v1 import SecretManagerServiceClient
    from google.cloud.storage import Client as StorageClient

EMULATOR_ENV = "CLOUDRUN_EMULATOR_HOST"
SECRETMANAGER_EMULATOR_ENV = "SECRETMANAGER_EMULATOR_HOST"
LOGGING_EMULATOR_ENV = "LOGGING_EMULATOR_HOST"
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


def secret_manager_client() -> SecretManagerServiceClient | None:
    """A Secret Manager client: SECRETMANAGER_EMULATOR_HOST's (insecure, no credentials)
    when set; None against the Cloud Run emulator without one (nothing to ask: the check is
    skipped, and the caller says so); else ADC's."""
    from google.cloud import secretmanager_v1

    host = os.environ.get(SECRETMANAGER_EMULATOR_ENV, "").strip()
    if host:
        import grpc  # type: ignore[import-untyped,unused-ignore]
        from google.cloud.secretmanager_v1.services.secret_manager_service.transports.grpc import (  # noqa: E501
            SecretManagerServiceGrpcTransport,
        )

        transport = SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(host))
        return secretmanager_v1.SecretManagerServiceClient(transport=transport)
    if emulator_host() is not None:
        return None
    return secretmanager_v1.SecretManagerServiceClient(credentials=default_credentials())


def logging_client() -> LoggingServiceV2Client | None:
    """A Cloud Logging client: LOGGING_EMULATOR_HOST's (insecure, no credentials) when set;
    None against the Cloud Run emulator without one (the caller says the logs are not read);
    else ADC's."""
    from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client

    host = os.environ.get(LOGGING_EMULATOR_ENV, "").strip()
    if host:
        import grpc  # type: ignore[import-untyped,unused-ignore]
        from google.cloud.logging_v2.services.logging_service_v2.transports.grpc import (
            LoggingServiceV2GrpcTransport,
        )

        transport = LoggingServiceV2GrpcTransport(channel=grpc.insecure_channel(host))
        return LoggingServiceV2Client(transport=transport)
    if emulator_host() is not None:
        return None
    return LoggingServiceV2Client(credentials=default_credentials())


def services_client() -> ServicesClient:
    """A Cloud Run Admin API v2 client: the emulator's when configured, else ADC's.

    A transport built on a ready channel skips every credential lookup; giving the client
    an endpoint and anonymous credentials instead would still open a TLS channel (and fail
    with a misleading 503).
    """
    from google.cloud import run_v2

    host = emulator_host()
    if host is not None:
        import grpc  # type: ignore[import-untyped,unused-ignore]
        from google.cloud.run_v2.services.services.transports.grpc import (
            ServicesGrpcTransport,
        )

        channel = grpc.insecure_channel(host)
        return run_v2.ServicesClient(transport=ServicesGrpcTransport(channel=channel))
    return run_v2.ServicesClient(credentials=default_credentials())


def jobs_clients() -> tuple[JobsClient, ExecutionsClient, TasksClient]:
    """The Admin API's Jobs, Executions and Tasks clients (see services_client)."""
    from google.cloud import run_v2

    host = emulator_host()
    if host is not None:
        import grpc  # type: ignore[import-untyped,unused-ignore]
        from google.cloud.run_v2.services.executions.transports.grpc import (
            ExecutionsGrpcTransport,
        )
        from google.cloud.run_v2.services.jobs.transports.grpc import JobsGrpcTransport
        from google.cloud.run_v2.services.tasks.transports.grpc import TasksGrpcTransport

        channel = grpc.insecure_channel(host)
        return (
            run_v2.JobsClient(transport=JobsGrpcTransport(channel=channel)),
            run_v2.ExecutionsClient(transport=ExecutionsGrpcTransport(channel=channel)),
            run_v2.TasksClient(transport=TasksGrpcTransport(channel=channel)),
        )
    credentials = default_credentials()
    return (
        run_v2.JobsClient(credentials=credentials),
        run_v2.ExecutionsClient(credentials=credentials),
        run_v2.TasksClient(credentials=credentials),
    )


STORAGE_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


def storage_client(project: str) -> StorageClient:
    """A Cloud Storage client: STORAGE_EMULATOR_HOST's (google-cloud-storage's own switch;
    anonymous) when set, else ADC's. Inside a Cloud Run task ADC is the task's service
    account, from the metadata server."""
    from google.cloud import storage

    if os.environ.get(STORAGE_EMULATOR_ENV, "").strip():
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    return storage.Client(project=project, credentials=default_credentials())


def default_credentials() -> Credentials:
    """Application Default Credentials, or CredentialsError naming the command that fixes it."""
    import google.auth
    import google.auth.credentials
    from google.auth.exceptions import DefaultCredentialsError

    try:
        # Scopes after loading: given to default(), they make it look up the project of a
        # workload identity pool (a Resource Manager call) that loop never uses.
        credentials, _project = google.auth.default()
    except DefaultCredentialsError as exc:
        # google-auth's own text is a paragraph with a link; only a bad key file says more.
        key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        detail = f" ({_first_line(exc)})" if key_file else ""
        raise CredentialsError(
            f"no Google Cloud credentials (Application Default Credentials){detail}:"
            f" {LOGIN_HINT}; or, to try loop without Google, point it at a fake Admin API"
            " with CLOUDRUN_EMULATOR_HOST (`make demo-staging`; README: \"Trying it without a"
            " Google account\")"
        ) from None
    scoped: Credentials = google.auth.credentials.with_scopes_if_required(  # type: ignore[no-untyped-call]
        credentials, [CLOUD_PLATFORM_SCOPE]
    )
    return scoped


IAM_CREDENTIALS_EMULATOR_ENV = "IAMCREDENTIALS_EMULATOR_HOST"
IAM_CREDENTIALS = "https://iamcredentials.googleapis.com"
USER_CREDENTIALS_HINT = (
    "user credentials (gcloud auth application-default login) cannot mint an ID token Cloud"
    " Run accepts: set [deploy] invoker_service_account to a service account with"
    " roles/run.invoker, on which you have roles/iam.serviceAccountTokenCreator"
)


def access_token() -> str | None:
    """An OAuth access token of ADC, for Google's registries; None without credentials (the
    registry then says whether it needs one)."""
    import google.auth.transport.requests
    from google.auth.exceptions import GoogleAuthError

    try:
        credentials = default_credentials()
        credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
    except (CredentialsError, GoogleAuthError):
        return None
    token = credentials.token
    return str(token) if token else None


def fetch_id_token(audience: str, invoker: str | None = None) -> str:
    """A fresh Google-signed ID token for `audience` (a Cloud Run service URL).

    With `invoker` (a service account's email) the token is that account's, minted by the
    IAM Credentials API (generateIdToken) on behalf of whatever credentials run loop: user
    credentials, a service account key, workload identity federation, the metadata server.
    That is the only way user credentials get a token Cloud Run accepts (a login's own ID
    token carries gcloud's OAuth client as its audience).

    Without it: service account keys and the metadata server mint tokens for any audience
    (`google.oauth2.id_token.fetch_id_token`); ADC made with `--impersonate-service-account`
    goes through the IAM Credentials API; user credentials and other sources are refused
    with what to set. The token is never logged or written anywhere.
    """
    import google.auth.transport.requests
    import google.oauth2.id_token
    from google.auth import impersonated_credentials
    from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError

    request = google.auth.transport.requests.Request()
    credentials = default_credentials()
    try:
        if invoker is not None:
            return generate_id_token(credentials, invoker, audience)
        if isinstance(credentials, impersonated_credentials.Credentials):
            # `gcloud auth application-default login --impersonate-service-account=...`
            id_credentials = impersonated_credentials.IDTokenCredentials(  # type: ignore[no-untyped-call]
                credentials, target_audience=audience, include_email=True
            )
            id_credentials.refresh(request)
            return str(id_credentials.token)
        problem = id_token_problem(credentials)
        if problem is not None:
            raise CredentialsError(f"cannot mint an ID token for {audience}: {problem}")
        token = google.oauth2.id_token.fetch_id_token(  # type: ignore[no-untyped-call]
            request, audience
        )
    except DefaultCredentialsError as exc:
        raise CredentialsError(
            f"cannot mint an ID token for {audience} ({_first_line(exc)}): set [deploy]"
            " invoker_service_account, use a service account key"
            " (GOOGLE_APPLICATION_CREDENTIALS), or set allow_unauthenticated = true"
        ) from None
    except GoogleAuthError as exc:
        raise CredentialsError(
            f"cannot mint an ID token for {audience}: {_first_line(exc)}; {LOGIN_HINT}"
        ) from None
    return str(token)


def id_token_problem(credentials: Credentials) -> str | None:
    """Why these credentials cannot mint an ID token Cloud Run accepts without
    `invoker_service_account`; None when they can."""
    import google.oauth2.credentials

    if isinstance(credentials, google.oauth2.credentials.Credentials):
        return USER_CREDENTIALS_HINT
    return None


def generate_id_token(credentials: Credentials, invoker: str, audience: str) -> str:
    """generateIdToken of the IAM Credentials API, called with `credentials`' access token
    (google-auth refreshes it: a user's refresh token, a key's signed assertion, an STS
    exchange for workload identity). IAMCREDENTIALS_EMULATOR_HOST points it at a local server
    over plain HTTP, for tests."""
    from google.auth.transport.requests import AuthorizedSession

    host = os.environ.get(IAM_CREDENTIALS_EMULATOR_ENV, "").strip()
    base = f"http://{host}" if host else IAM_CREDENTIALS
    url = f"{base}/v1/projects/-/serviceAccounts/{invoker}:generateIdToken"
    session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
    try:
        response = session.post(
            url, json={"audience": audience, "includeEmail": True}, timeout=30
        )
    finally:
        session.close()  # type: ignore[no-untyped-call]
    if response.status_code == 403:
        raise CredentialsError(
            f"cannot mint an ID token as {invoker}: permission denied; the identity running"
            f" loop needs roles/iam.serviceAccountTokenCreator on {invoker}"
        )
    if response.status_code == 404:
        raise CredentialsError(
            f"cannot mint an ID token as {invoker}: no such service account; check [deploy]"
            " invoker_service_account"
        )
    if response.status_code != 200:
        raise CredentialsError(
            f"cannot mint an ID token as {invoker}: the IAM Credentials API answered"
            f" {response.status_code}: {_first_line(Exception(response.text[:300]))}"
        )
    token = response.json().get("token")
    if not isinstance(token, str) or not token:
        raise CredentialsError(f"cannot mint an ID token as {invoker}: no token in the answer")
    return token


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
