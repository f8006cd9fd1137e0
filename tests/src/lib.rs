//! End-to-end tests for `ft` live in `tests/tests/`; fixtures in `tests/fixtures/` with their generators in `tests/fixtures/gen/`.
