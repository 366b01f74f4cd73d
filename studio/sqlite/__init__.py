"""The SQLite adapter: the only package that opens a SQLite connection or writes SQL.

`store.Store` is the database behind the repository Protocols; everything above it sees
records (`studio/records.py`), never a connection.
"""
