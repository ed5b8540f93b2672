"""registry-proxy: a registry-aware pull-through proxy for container images."""

__all__ = ["__version__"]

__version__ = "0.1.0"
