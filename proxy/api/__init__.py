"""The only code that knows aiohttp.web: registry API handlers and middlewares."""
