"""`harness diagnose`: where a run's time went, as ranked findings with their evidence.

``facts`` extracts the numbers once per run directory; ``single`` holds the rules about one
run, ``change`` those against a baseline, ``selfcheck`` the rules about the harness's own
numbers; ``engine`` runs and ranks them (``from harness.analysis.diagnosis.engine import
diagnose``). Nothing is imported here: ``harness.analysis.summary`` uses the self-check
rules without loading the diagnosis engine.
"""
