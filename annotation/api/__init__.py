"""REST API of the annotation app, by area: validate input -> one service or selector -> serialize output."""
