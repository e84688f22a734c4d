"""The `aintandem` command: run the platform (`up`) or its pieces (`api`, `worker`, `migrate`)."""
