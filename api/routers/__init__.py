"""One router per spec section."""
