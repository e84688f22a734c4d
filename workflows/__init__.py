"""Durable workflows. Deterministic: no I/O, time from workflow.now(), activities by name."""
