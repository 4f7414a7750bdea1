"""The system of record: the SQL schema and migrations, sessions, the unit of work that
writes the machine's decisions, claims, the inbox, read models."""
