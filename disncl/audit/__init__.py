"""``python -m disncl audit``: one command from a folder of image–caption pairs to a served explorer."""
