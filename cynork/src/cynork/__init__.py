"""cynork: the CyNode command-line client."""

__version__ = "0.1.0"
