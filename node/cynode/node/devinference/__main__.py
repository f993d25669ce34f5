"""``python -m cynode.node.devinference``."""

from cynode.node.devinference.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
