"""kushi.cluster."""
