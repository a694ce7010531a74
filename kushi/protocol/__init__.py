"""kushi.protocol."""
