"""The PostgreSQL adapter (team mode, `DATABASE_URL=postgresql://…`): a connection pool
(`pool.py`), the studio's schema as numbered migrations (`schema.py`), the event bus bridged
across replicas with LISTEN/NOTIFY (`events.py`) and work claims with leases taken with
`FOR UPDATE SKIP LOCKED` (`claims.py`).

Only this package (and `studio/sqlite/`) opens database connections or writes SQL. psycopg is
imported here only, so a single-user studio on SQLite never loads it.
"""
