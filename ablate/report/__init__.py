"""Study reports: the statistics that compare ablation arms (stats.py)."""
