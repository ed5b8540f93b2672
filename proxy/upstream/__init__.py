"""The outbound registry client: endpoints, challenges, tokens, redirects, SSRF guard."""
