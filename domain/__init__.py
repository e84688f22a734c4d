"""Pure types and rules shared by every layer: ids, enums, errors, workflow inputs (no I/O)."""
