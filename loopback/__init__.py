"""Real services on 127.0.0.1 for the tests and benchmarks: a redis-server the caller can kill and
restart, and stand-in servers that speak the Cohere, TEI, Infinity/vLLM and OpenAI wire formats
(faults included). Not part of the installed package."""
