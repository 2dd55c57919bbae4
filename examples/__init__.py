"""Example applications built on RaptorFlow Bus."""
