# unime serve: base64 + request parsing (unit), and the server end to end with the official
# `openai` npm client, a 32-client load test, error answers, 503 and SIGTERM drain (model).
unime_test(test-serve-unit.cpp LABEL unit)
unime_test(test-serve.cpp LABEL model TIMEOUT 600)
