"""Tables, plots and the HTML report that turn run results into something a clinician-researcher can read."""
