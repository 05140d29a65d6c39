"""Reports: one reading of a run, report.md, tables, plots and fits."""
