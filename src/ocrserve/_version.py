"""The version, written once. ``pyproject.toml`` reads it (setuptools' ``attr:``, which parses
this file without importing the package), ``ocrserve.__version__`` re-exports it, and
``ocrserve --version`` prints it. It imports nothing, so reading it costs nothing."""

__version__ = "0.1.0"
