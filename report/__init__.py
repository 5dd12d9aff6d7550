"""The sweep report: what each point of a sweep produced, as a table and one HTML page.

    $ decode report sweep.jsonl --html report.html
"""
