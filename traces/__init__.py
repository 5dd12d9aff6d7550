"""What a search did, step by step: the tree rebuilt from its step records (`tree`), the
trace file and its format (`record`), reading and drawing it (`viz`), and the same tree live
as Python objects (`steps`, `decode.steps`)."""
