# tests/gen-selftest.cmake - self-test of the Python reference generators in tests/gen/
# (st.py, tiny_models.py, reference.py) that the C++ parity tests trust. Pure Python: no target.
add_test(NAME test-gen-selftest
         COMMAND ${UNIME_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/test-gen-selftest.py
         WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
set_tests_properties(test-gen-selftest PROPERTIES LABELS unit TIMEOUT 120
                     ENVIRONMENT "PYTHONDONTWRITEBYTECODE=1")
