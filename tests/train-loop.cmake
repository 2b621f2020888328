# The training commands end to end (stage 1, stage 2, resume, errors).
unime_test(test-train-cli.cpp LABEL model)
