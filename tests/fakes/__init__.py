"""Local fakes of the services Billbridge talks to, for tests and benchmarks."""
