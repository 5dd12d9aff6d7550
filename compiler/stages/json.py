"""`json [schema=FILE|{...}]`: the new text is a JSON value, valid under a schema when given.

A constraint: its matchers run on the host (compiler/constraint.py), and the kernel applies
their bitmask inside the compiled step (_constrain.py)."""
from decode.compiler.stages._constrain import NEEDS, STATIC, accept, apply, init, prepare

__all__ = ["NEEDS", "STATIC", "accept", "apply", "init", "prepare"]
