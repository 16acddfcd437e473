"""metalite.bench: ``metalite bench`` (``run.run_bench``), its README section (``readme``) and the fleet
measurements (``fleet``); one module per report section, timed by the self-contained ``timing`` worker."""
