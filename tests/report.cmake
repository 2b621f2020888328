# src/report: charts and picture grids (PLplot).
unime_test(test-plot.cpp LABEL unit)
unime_test(test-plot-cli.cpp LABEL model)
