"""Pure parsers: text or bytes in, small typed objects out. No I/O here."""
