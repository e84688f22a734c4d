"""Activities: one module per external system (docker, llm, store)."""
