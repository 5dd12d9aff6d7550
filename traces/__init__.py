"""What a search did, step by step: the trace file and its format (`record`), reading and
drawing it (`viz`), and the same records live as Python objects (`steps`, `decode.steps`)."""
