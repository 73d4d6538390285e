"""Fuzz targets for the request path and the token verifier (issue 4)."""
