"""Image tags resolved to digests before a deploy, so that the revision runs exactly the image
that was there when the iteration started: a tag pushed again later cannot change what was
tested, and a missing image fails before any service is touched.

The registry's v2 API (Artifact Registry, gcr.io, any Docker registry): HEAD on the manifest
answers its digest in `Docker-Content-Digest`, with the ADC access token as Bearer for Google's
registries. REGISTRY_EMULATOR_HOST=host:port sends the same requests to a local registry over
plain HTTP, for tests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import httpx

EMULATOR_ENV = "REGISTRY_EMULATOR_HOST"
# Manifest kinds a registry may hold for an image: multi-platform indexes and single ones.
_ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class ImageError(Exception):
    """An image that cannot be resolved; the message names it and says why."""


@dataclass(frozen=True)
class ImageRef:
    registry: str  # host[:port]
    repository: str
    tag: str | None
    digest: str | None

    @property
    def pinned(self) -> str:
        """The reference by digest (the repository's, without the tag)."""
        assert self.digest is not None
        return f"{self.registry}/{self.repository}@{self.digest}"


def used_as_written() -> bool:
    """Against the Cloud Run fake with no registry emulator: images are not resolved (there is
    no registry to ask), and the output says so once."""
    return bool(os.environ.get("CLOUDRUN_EMULATOR_HOST", "").strip()) and not os.environ.get(
        EMULATOR_ENV, ""
    ).strip()


AS_WRITTEN_NOTE = (
    "images used as written, not resolved to digests: CLOUDRUN_EMULATOR_HOST is set and"
    f" {EMULATOR_ENV} is not"
)


def parse(image: str) -> ImageRef:
    """`host/path[:tag][@sha256:...]`; Docker Hub's short names are not registry names here
    (Cloud Run runs images from Artifact Registry, gcr.io or a registry named in full)."""
    rest, _, digest = image.partition("@")
    registry, slash, path = rest.partition("/")
    if not slash or ("." not in registry and ":" not in registry and registry != "localhost"):
        raise ImageError(f"{image}: not a full image reference (REGISTRY/REPOSITORY[:TAG])")
    repository, tag = path, None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = path.rsplit(":", 1)
    if digest and not _DIGEST.match(digest):
        raise ImageError(f"{image}: {digest!r} is not a sha256 digest")
    return ImageRef(registry, repository, tag or ("latest" if not digest else None), digest or None)


def resolve(image: str, access_token: Callable[[], str | None]) -> ImageRef:
    """The image with the digest its tag points at now; ImageError if it is not there."""
    ref = parse(image)
    if ref.digest is not None:
        return ref
    host = os.environ.get(EMULATOR_ENV, "").strip()
    base = f"http://{host}" if host else f"https://{ref.registry}"
    url = f"{base}/v2/{ref.repository}/manifests/{ref.tag}"
    headers = {"Accept": _ACCEPT}
    token = None if host else access_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.head(url, headers=headers, timeout=30, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise ImageError(f"{image}: registry {ref.registry} did not answer ({exc})") from None
    if response.status_code == 404:
        raise ImageError(f"{image}: no such image (tag {ref.tag!r} not found in {ref.registry})")
    if response.status_code in (401, 403):
        raise ImageError(
            f"{image}: the registry refused to show it ({response.status_code}): the identity"
            " running loop needs read access (Artifact Registry Reader)"
        )
    digest = response.headers.get("Docker-Content-Digest", "")
    if response.status_code != 200 or not _DIGEST.match(digest):
        raise ImageError(
            f"{image}: the registry answered {response.status_code} without a digest"
        )
    return ImageRef(ref.registry, ref.repository, ref.tag, digest)
