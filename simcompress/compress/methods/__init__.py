"""Built-in compression methods; importing this package registers them."""
