"""The records of a clinic run's metrics.jsonl, for the scripts that print
docs tables from run dirs (cases_table.py, case_a_table.py, table1_table.py),
and their table cells. Stdlib only."""
import json
import os


def records(run_dir):
    """Yield each parsed record of RUN_DIR/metrics.jsonl, skipping a line that
    does not parse (a killed run's last one)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                continue


def cell(v, spec=".2f"):
    """A table cell: v formatted by spec, "-" when absent."""
    return "-" if v is None else format(v, spec)
