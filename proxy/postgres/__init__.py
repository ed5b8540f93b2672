"""PostgreSQL for what replicas share: a pool for transactions in worker threads, LISTEN, advisory locks.

A leaf: it imports nothing from the rest of the proxy. psycopg is imported
inside the functions that connect, so a process without ``state.url`` never
loads it.
"""
