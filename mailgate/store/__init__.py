"""Persistence: SQLModel tables, the database handle, migrations, repositories. Knows nothing of mail."""
