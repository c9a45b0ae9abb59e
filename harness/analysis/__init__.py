"""What is computed from a run directory after the run: the summary (``summary/``) and its
self-check (``selfcheck``), the diagnosis (``diagnosis/``), SLO checks (``slo/``),
comparisons (``compare``) and the input-data checks (``data/``). The self-check and the
diagnosis are rules of one engine, with their thresholds in one table (``rules/``). Pure
functions of run directories, read through the typed records of ``harness.rundir.records``;
never starts a process.
"""
