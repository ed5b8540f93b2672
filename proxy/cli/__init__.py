"""The command line: ``serve``, ``healthcheck`` and the admin commands, which call the admin API.

``main`` assembles the parser and dispatches; ``serve`` runs the proxy (and
alone imports the server, lazily); each admin command has its module
(``registries``, ``fetch_ca``, ``environments``, ``keys``, ``settings_cmd``,
``upstreams``) built on ``parsing``, ``output``, ``kinds``, ``certs`` and the
API ``client``. The package imports nothing of the handlers (``proxy.api``,
``proxy.pullthrough``).
"""

__all__: list[str] = []
