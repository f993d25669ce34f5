"""Task artifacts on the orchestrator: the blob store, the rows that describe each
job's files, the node's upload service and the gateway's list and download
(SPEC §2.11, §7.11)."""

from cynode.orchestrator.artifacts.blobs import BlobError, BlobStore, Corrupt, FsBlobStore

__all__ = ["BlobError", "BlobStore", "Corrupt", "FsBlobStore"]
