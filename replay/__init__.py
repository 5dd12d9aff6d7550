"""Replay: re-run each line of a results file from what it records, and say whether the
same tokens come back (identical), not (different: the first token that differs), or
whether this machine cannot tell (not reproducible here: another model, device or dtype).

    $ decode replay results.jsonl
"""
