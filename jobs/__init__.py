"""Batch jobs: a prompts file in, a results file out, resumable (`batch`); one writer per
output file (`lock`); the prompts shared out over torchrun's processes (`distributed`)."""
