# `unime demo --quick`: the whole pipeline, its claims, its artefacts (src/demo/).
unime_test(test-demo.cpp LABEL model TIMEOUT 1800)
unime_test(test-teacher.cpp LABEL model)
