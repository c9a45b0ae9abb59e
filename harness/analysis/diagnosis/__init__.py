"""`harness diagnose`: where a run's time went, as ranked findings with their evidence.

``facts`` extracts the numbers once per run directory (``trends`` reads what the summary
does not keep); the rules about one run are filed by layer (``measurement``,
``infrastructure``, ``stages``, ``inputs``; ``single`` runs them in that order), those
against a baseline in ``change`` (``deltas`` computes every difference once); ``measures``
holds the quantities several rules judge. ``engine`` runs and ranks them (``from
harness.analysis.diagnosis.engine import diagnose``). Nothing is imported here. The rules
are registered in the books of ``harness.analysis.rules``; the self-check's rules are
``harness.analysis.selfcheck``.
"""
