"""kushi.ops."""
