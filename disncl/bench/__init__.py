"""``python -m disncl bench``: the methods side by side on the synthetic benchmark, one report.

presets.py names the grids, worker.py trains and measures one run in its own process, runner.py
schedules the runs (resumable: finished runs are skipped), report.py writes the markdown and plots.
"""
