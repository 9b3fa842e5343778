"""Example actors: small, complete, tested (tests/test_examples.py). See examples/README.md."""
