"""The scaling report: an experiment's runs, or one sweep's, from MLflow -> a table, the Pareto front
and plots.

    rows.py    runs -> one row each (the run schema of docs/ARCHITECTURE.md), a point's seeds as one
               row (mean ± std), sorting and the Pareto front
    tables.py  the Markdown table and the CSV
    plots.py   top-1 vs MACs, top-1 vs throughput, MACs vs φ beside d·w²·r²
    study.py   a two-stage study: the search table and picture, the scale curve and its fit
    series.py  scaling series (one dimension at a time vs compound): a curve per series, a table per level
    build.py   the whole report: read, group, write, and log the folder as a "report" run

May import `phiscale.tracking` (the one client), `phiscale.sweeps` (a sweep's record and states),
`phiscale.models.scaling`, `errors`; nothing imports it but `cli`.
"""
