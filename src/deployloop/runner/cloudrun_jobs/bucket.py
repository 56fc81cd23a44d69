"""The results bucket: opened with loop's credentials (or the task's), checked before an
iteration starts, and called with retries on transient errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from google.cloud.storage import Bucket

T = TypeVar("T")
CHECK_TIMEOUT_S = 15.0


class BucketError(Exception):
    """The results bucket cannot be read or written; the message is one line."""


def open_bucket(project: str, name: str) -> Bucket:
    from deployloop.deploy.gcp import storage_client

    return storage_client(project).bucket(name)


def retrying(call: Callable[[], T]) -> T:
    """Transient Cloud Storage errors (429, 5xx, a dropped connection) are retried."""
    import requests
    from google.api_core import exceptions
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

    transient = (
        exceptions.TooManyRequests,
        exceptions.ServerError,
        requests.ConnectionError,
        requests.Timeout,
    )
    return retry(
        retry=retry_if_exception_type(transient),
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.5, max=4),
        reraise=True,
    )(call)()


def check_bucket(project: str, url: str) -> None:
    """The bucket exists and loop may list it: BucketError naming the fix, before anything
    is deployed. Listing needs only storage.objects.list, which roles/storage.objectAdmin on
    the bucket grants (a bucket's own metadata needs more)."""
    import requests
    from google.api_core import exceptions
    from google.cloud.storage.retry import DEFAULT_RETRY

    from deployloop.deploy.gcp import STORAGE_EMULATOR_ENV
    from deployloop.runner.cloudrun_jobs.layout import split_url

    name, _folder = split_url(url)
    # The client's own retries give up after 120 s; a check says it within about 15.
    patience = DEFAULT_RETRY.with_timeout(CHECK_TIMEOUT_S)
    try:
        bucket = open_bucket(project, name)
        list(bucket.client.list_blobs(bucket, max_results=1, timeout=5, retry=patience))
    except exceptions.NotFound:
        raise BucketError(
            f"results bucket gs://{name} does not exist: create it (gcloud storage buckets"
            f" create gs://{name} --project={project}) or fix [tests.cloudrun_jobs]"
            " results_bucket"
        ) from None
    except exceptions.Forbidden:
        raise BucketError(
            f"permission denied on results bucket gs://{name}: loop's identity and the job's"
            " service account need roles/storage.objectAdmin on it"
        ) from None
    except (exceptions.GoogleAPIError, requests.RequestException) as exc:
        import os

        where = os.environ.get(STORAGE_EMULATOR_ENV)
        via = f" (STORAGE_EMULATOR_HOST={where})" if where else ""
        cause = getattr(exc, "cause", None) or exc  # a RetryError wraps the last error
        if isinstance(cause, requests.ConnectionError):
            said = "cannot connect"
            if "Connection refused" in str(cause):
                said += " (connection refused)"
        else:
            said = _first_line(cause)
        raise BucketError(
            f"results bucket gs://{name}: Cloud Storage unreachable{via}: {said}"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)
