"""A job's artifacts on the node: the spool that keeps them until the orchestrator has
stored them, and the uploader that sends them (SPEC §4.11, §7.11)."""

from cynode.node.artifacts.spool import ArtifactSpool, Pending
from cynode.node.artifacts.upload import ArtifactUploader

__all__ = ["ArtifactSpool", "ArtifactUploader", "Pending"]
