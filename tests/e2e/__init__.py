"""End-to-end tests: real registry, real skopeo, the proxy as a subprocess."""
