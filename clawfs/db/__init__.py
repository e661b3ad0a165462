"""All SQL of ClawFS lives in this sub-package: the schema and its numbered migrations (`schema`) and one typed
apsw wrapper (`database`). Nothing outside it writes a SQL statement."""

from .database import Database, DiskFull, DiskIOError, InodeRow, Locked, SlotRow, StorageError

__all__ = ["Database", "DiskFull", "DiskIOError", "InodeRow", "Locked", "SlotRow", "StorageError"]
