"""Support shared by the tests and the benchmarks, kept out of both so that neither imports the other:
real server processes on loopback (`processes`, `servers`), the tiny bonded space they serve
(`tiny_space`), the crash trials (`crash`) and the bad-input media corpus (`bad_media`).

Not part of the installed packages: it runs from a checkout, as the tests and `python -m bench` do.
"""
