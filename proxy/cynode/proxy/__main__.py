"""``python3 -m cynode.proxy`` — the sidecar image's entrypoint."""

from cynode.proxy.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
