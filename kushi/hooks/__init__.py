"""kushi.hooks."""
