"""Training methods: one package each (`<name>/settings.py`, free of JAX, and
`<name>/method.py`), over the interface in `base.py` and the pieces several methods
share in `components/`; `registry.py` maps `method_name` to a method. No method
imports another (tests/test_imports.py)."""
