"""Cache-first pull logic: routing, blobs, manifests, tags. Knows no HTTP server."""
