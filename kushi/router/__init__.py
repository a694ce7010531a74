"""kushi.router."""
