unime_test(test-world.cpp LABEL model)
