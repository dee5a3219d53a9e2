//! Loader tests: hostile input, unknown keys, type errors, the example configs.
