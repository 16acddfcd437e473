"""metalite.bench: ``metalite bench`` (``run.run_bench``), its README section (``readme``) and the fleet
measurements (``fleet``).

One module per report section (``machine``, ``variants``, ``accuracy``, ``size``, ``latency``, ``pareto``,
``adapt``, ``memory``), each holding its measurement, its report.md lines, its plot and its headline entry;
``report`` puts them in order. ``timing`` is the self-contained worker the latency figures come from, ``odt``
the TFLite on-device-training baseline the adaptation section compares with."""
