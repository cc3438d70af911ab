"""Where entries and counters come from."""
