"""Services own the transaction: validate, write through repositories, commit once."""
