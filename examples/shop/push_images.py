"""Build the shop's images and push them where configs/staging.toml deploys them from.

    GCP_PROJECT=my-staging GCP_REGION=europe-west1 python examples/shop/push_images.py

Each service (auth, backend) is built from examples/shop/Dockerfile and pushed as
$GCP_REGION-docker.pkg.dev/$GCP_PROJECT/shop/<service>:staging, in an Artifact Registry
repository named `shop` (create it once, see the README). Docker must be logged in to it:
`gcloud auth configure-docker $GCP_REGION-docker.pkg.dev`.

Against the fake Admin API (CLOUDRUN_EMULATOR_HOST set, no REGISTRY_EMULATOR_HOST) the fake's
revisions run this work tree, so there is nothing to build: it says so and exits 0.
Exit 0 when pushed (or nothing to do), 1 when a build or push failed, 2 on a usage error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SHOP = Path(__file__).resolve().parent
SERVICES = ["auth", "backend"]
TAG = "staging"


def repository() -> str:
    missing = [v for v in ("GCP_PROJECT", "GCP_REGION") if not os.environ.get(v)]
    if missing:
        sys.exit(f"push_images: set {' and '.join(missing)} (the staging project and region)")
    return f"{os.environ['GCP_REGION']}-docker.pkg.dev/{os.environ['GCP_PROJECT']}/shop"


def main() -> int:
    if os.environ.get("CLOUDRUN_EMULATOR_HOST") and not os.environ.get("REGISTRY_EMULATOR_HOST"):
        print("push_images: the fake Admin API runs this work tree's services; nothing to build")
        return 0
    repo = repository()
    if shutil.which("docker") is None:
        print("push_images: docker is not installed; build the images some other way, e.g."
              " `gcloud builds submit`", file=sys.stderr)
        return 2
    for service in SERVICES:
        image = f"{repo}/{service}:{TAG}"
        for argv in (
            ["docker", "build", "--quiet", "-f", str(SHOP / "Dockerfile"),
             "--build-arg", f"SERVICE={service}", "-t", image, str(SHOP)],
            ["docker", "push", "--quiet", image],
        ):
            print("push_images: " + " ".join(argv[:2]) + f" {image}", flush=True)
            if subprocess.run(argv).returncode != 0:
                print(f"push_images: `{' '.join(argv)}` failed", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
