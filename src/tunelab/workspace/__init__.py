"""The governed workspace: database, dataset versions, lineage, registry and the audit trail."""

from tunelab.workspace.audit import current_actor
from tunelab.workspace.workspace import Workspace, WorkspaceError, WorkspaceSettings

__all__ = ["Workspace", "WorkspaceError", "WorkspaceSettings", "current_actor"]
