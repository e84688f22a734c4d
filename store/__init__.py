"""Persistence: SQLAlchemy models, repositories, engine/session, the event log and migrations."""
