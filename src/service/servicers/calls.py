"""What servicers read from the current call: shared by the service modules, which do not
import each other."""

from __future__ import annotations

from service.auth.context import current_call


def resolved_workspace_id() -> str:
    """The workspace the auth check resolved from the request's resource."""
    workspace_id = current_call().require_access().workspace_id
    if workspace_id is None:
        raise RuntimeError("the auth rule did not resolve a workspace")
    return workspace_id
