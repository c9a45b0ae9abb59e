"""What is computed from a run directory after the run: the summary and its self-check,
the diagnosis (``diagnosis/``), SLO checks (``slo/``), comparisons (``compare``) and the
input-data checks (``data/``). Pure functions of run directories; never starts a process.
"""
