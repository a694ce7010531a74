"""kushi.worker."""
