"""The simulator (numpy/scipy only, below ``sr`` and ``train``): confocal/STED image formation,
the broad structure families (``domain``), the classic four shapes (``simulate``) and live
time-lapses (``timelapse``). Training, the demo, the benchmarks and the tests use it."""
