"""Request/response models. Requests forbid unknown fields (no mass assignment)."""
