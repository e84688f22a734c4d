"""All SQL lives here: one module per aggregate. Repositories never commit; services do."""
