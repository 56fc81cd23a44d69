"""The `cloudrun` target: each service as a Google Cloud Run service, through the Admin API v2.

A deploy creates the service when GetService says NOT_FOUND and updates it otherwise; either
way Cloud Run makes a new revision, and the service counts as ready only when

  (a) the rollout's terminal condition (`Ready`) succeeded,
  (b) latest_ready_revision == latest_created_revision == the revision this deploy created,
  (c) GET <service uri><health_path> answers 2xx within `ready_timeout_s` (with an ID token
      as Bearer when the service is not public and no emulator is in use).

An update starts from the live service and changes only what the config sets (`merge`): a
revision setting, env var, volume or tag the config does not name stays as deployed, and
`loop plan` lists what is kept. With `traffic = "candidate"` each new revision is named,
tagged `loop-it<N>` and given no traffic until `promote` moves it there.

Image placeholders: `{iteration}` is the iteration number; `{git_sha}` is the SHA as the
iteration recorded it: 40 hex digits, with `-dirty` appended when tracked files differ from
HEAD (both valid in a tag or a repository path), or `unknown` outside a git checkout. A build
step must tag its images the same way.

Transient API errors (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, ABORTED)
are retried with exponential backoff, a few times; PERMISSION_DENIED, NOT_FOUND (except the
create-if-missing case), INVALID_ARGUMENT and the like fail at once with a one-line message.
Secrets go into the template as Secret Manager references, never as values; ID tokens are
never logged or written.

Google libraries are imported inside the functions that use them (see `gcp`).

Modules: `target` (CloudRunTarget: deploy, stop, test_env, rollback, plan), `spec` (the
Service sent, built from the config), `changes` (what `loop plan` shows), `errors` (API
errors: transient or not, one-line messages).
"""

from deployloop.deploy.cloudrun.changes import describe_changes
from deployloop.deploy.cloudrun.errors import describe_api_error
from deployloop.deploy.cloudrun.merge import merge_for_update, unmanaged_settings
from deployloop.deploy.cloudrun.spec import (
    ANNOTATION_DEPLOY_ID,
    ANNOTATION_GIT_SHA,
    INGRESS,
    LABEL_ENV,
    LABEL_ITERATION,
    build_service,
    check_rollout,
    condition_message,
    image_for,
    image_sha,
    label_value,
    parent_path,
    service_path,
    serving_share,
    short_name,
    token_env_var,
)
from deployloop.deploy.cloudrun.target import (
    INVOKER_ROLE,
    PUBLIC_MEMBER,
    CloudRunSettings,
    CloudRunTarget,
)

__all__ = [
    "ANNOTATION_DEPLOY_ID",
    "ANNOTATION_GIT_SHA",
    "INGRESS",
    "INVOKER_ROLE",
    "LABEL_ENV",
    "LABEL_ITERATION",
    "PUBLIC_MEMBER",
    "CloudRunSettings",
    "CloudRunTarget",
    "build_service",
    "check_rollout",
    "condition_message",
    "describe_api_error",
    "describe_changes",
    "image_for",
    "image_sha",
    "label_value",
    "merge_for_update",
    "parent_path",
    "service_path",
    "serving_share",
    "short_name",
    "token_env_var",
    "unmanaged_settings",
]
