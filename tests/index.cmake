# src/index: FAISS indexes, search, mining and `unime serve --index [--ui]`.
# test-index-unit: the index on random vectors + the /v1/search parser (no model);
# test-index: the commands end to end on a tiny model (kills `index add` at random moments, checks
# the search page in Debian's chromium through playwright-core).
unime_test(test-index-unit.cpp LABEL unit)
target_link_libraries(test-index-unit PRIVATE unime_index)
unime_test(test-index.cpp LABEL model TIMEOUT 900)
target_link_libraries(test-index PRIVATE unime_index)
