"""The CyNode worker node daemon: start-up sequence, dispatch client, worker API."""
